-- A confirmed booking refunded before entry (bookcluster/booking/refunds.py through
-- ledger.py): one statement, one transaction, under the booking's row lock, the lock a
-- door scan takes too (bc_checkin), so a refund and a scan of one ticket queue up and
-- exactly one of them wins.

-- CONFIRMED -> CANCELLED: its seats AVAILABLE again (locked in seat-id order, with
-- 'unbook' mirror rows), booking_seat no longer sold, its payment REFUND_PENDING with a
-- refund job and the user told (bc_refund_started; the job's gateway refund makes it
-- REFUNDED). p_user: the booking's owner, or NULL for an operator (any booking).
-- Outcomes (refusals change nothing):
--   ('refunded', seats freed)  done now;
--   ('replay', seats)          refunded before: the same answer;
--   ('not_found', {})          no such booking (of p_user);
--   ('ticket_used', {})        its ticket went in at the door;
--   ('not_confirmed', {status}) INITIATED, EXPIRED, or CANCELLED without a refund;
--   ('refund_closed', {})      past p_closes_at (the show's refund cut-off).
-- Raises 'bc_deadline' (past p_deadline) having changed nothing. Fenced first (bc_own).
-- answer_body: the booking as refunded (the same text for a replay).
CREATE OR REPLACE FUNCTION bc_refund(p_show bigint, p_booking text, p_user text,
                                     p_reason text, p_region text, p_closes_at timestamptz,
                                     p_deadline timestamptz, p_epoch integer)
RETURNS TABLE (outcome text, detail text[], answer_body text)
LANGUAGE plpgsql SET TimeZone = 'UTC' AS $$
DECLARE
    v_booking booking%ROWTYPE;
    v_paid text;
    v_seats text[];
BEGIN
    PERFORM bc_own(p_show, p_epoch);
    SELECT * INTO v_booking FROM booking b
    WHERE b.id = p_booking AND b.show_id = p_show AND (p_user IS NULL OR b.user_id = p_user)
    FOR UPDATE;
    detail := '{}';
    IF NOT FOUND THEN
        outcome := 'not_found';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT p.status INTO v_paid FROM payment p WHERE p.id = v_booking.payment_id;
    v_seats := ARRAY(SELECT bs.seat_id FROM booking_seat bs
                     WHERE bs.booking_id = p_booking ORDER BY bs.seat_id);
    IF v_booking.status = 'CANCELLED' AND v_paid IN ('REFUND_PENDING', 'REFUNDED') THEN
        outcome := 'replay';
        detail := v_seats;
    ELSIF EXISTS (SELECT 1 FROM checkin_scan c WHERE c.booking_id = p_booking
                  AND c.outcome IN ('admitted', 'entered_twice')) THEN
        outcome := 'ticket_used';
        RETURN NEXT;
        RETURN;
    ELSIF v_booking.status <> 'CONFIRMED' THEN
        outcome := 'not_confirmed';
        detail := ARRAY[v_booking.status];
        RETURN NEXT;
        RETURN;
    ELSIF now() >= p_closes_at THEN
        outcome := 'refund_closed';
        RETURN NEXT;
        RETURN;
    ELSE
        PERFORM 1 FROM show_seat ss WHERE ss.show_id = p_show AND ss.seat_id = ANY (v_seats)
        ORDER BY ss.seat_id FOR UPDATE;
        detail := ARRAY(SELECT ss.seat_id FROM show_seat ss WHERE ss.show_id = p_show
                        AND ss.seat_id = ANY (v_seats) AND ss.status = 'BOOKED'
                        AND ss.booked_booking_id = p_booking ORDER BY ss.seat_id);
        UPDATE show_seat ss SET status = 'AVAILABLE', booked_booking_id = NULL,
               updated_at = now()
        WHERE ss.show_id = p_show AND ss.seat_id = ANY (detail);
        -- The sale's own 'book' rows not applied yet are void now: the worker replaying
        -- one after these seats were held again would drop that hold in Redis (BOOK drops
        -- any hold on its seats). What a replay already in flight still does, the
        -- reconciler repairs.
        UPDATE mirror_change m SET applied_at = now()
        WHERE m.show_id = p_show AND m.booking_id = p_booking AND m.op = 'book'
          AND m.applied_at IS NULL;
        INSERT INTO mirror_change (show_id, booking_id, op, seat_id)
        SELECT p_show, p_booking, 'unbook', x FROM unnest(detail) x;
        UPDATE booking_seat bs SET sold = false WHERE bs.booking_id = p_booking;
        UPDATE booking b SET status = 'CANCELLED', updated_at = now() WHERE b.id = p_booking;
        PERFORM bc_refund_started(p_booking, v_booking.payment_id, v_booking.amount_paise,
                                  p_reason);
        outcome := 'refunded';
        IF clock_timestamp() > p_deadline THEN
            RAISE EXCEPTION 'bc_deadline' USING ERRCODE = 'P0001';
        END IF;
    END IF;
    answer_body := json_build_object(
        'booking_id', v_booking.id, 'user_id', v_booking.user_id,
        'show_id', v_booking.show_id, 'region', p_region, 'seat_ids', to_json(v_seats),
        'status', 'CANCELLED', 'amount_paise', v_booking.amount_paise,
        'refund', json_build_object('payment_id', v_booking.payment_id,
                                    'amount_paise', v_booking.amount_paise))::text;
    RETURN NEXT;
END $$;
