-- The Redis seat mirror's change log (region_node/mirror.py).
--
-- Every committed seat change that Redis must learn (a sale, a release) writes
-- its rows here in the same transaction. The node applies them at once after
-- commit; the region's worker applies every row not yet marked applied, in
-- order, until Redis answers, then marks it. Applying twice changes nothing.
-- Generations: each (re)start of a region's master gets the next number, kept
-- here so it never repeats (a master's own counter can go back after a crash).

CREATE TABLE mirror_change (
    id          bigserial PRIMARY KEY,
    show_id     bigint NOT NULL,
    booking_id  text NOT NULL,
    op          text NOT NULL CHECK (op IN ('book', 'release')),
    seat_id     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    applied_at  timestamptz
);
CREATE INDEX mirror_change_pending ON mirror_change (id) WHERE applied_at IS NULL;
CREATE INDEX mirror_change_applied ON mirror_change (applied_at) WHERE applied_at IS NOT NULL;

CREATE SEQUENCE mirror_generation_seq;

-- bc_sell as in 0005, plus the mirror rows of the sale.
CREATE OR REPLACE FUNCTION bc_sell(p_show bigint, p_booking text, p_payment text, p_payment_status text,
                        p_amount integer)
RETURNS TABLE (outcome text, detail text[]) LANGUAGE plpgsql AS $$
DECLARE
    v_booking booking%ROWTYPE;
    v_wanted text[];
    v_locked integer;
    v_taken text[];
BEGIN
    SELECT * INTO v_booking FROM booking WHERE id = p_booking FOR UPDATE;
    IF v_booking.status = 'CONFIRMED' THEN
        outcome := 'not_pending'; detail := ARRAY[v_booking.status]; RETURN NEXT; RETURN;
    ELSIF v_booking.status <> 'INITIATED' THEN
        outcome := 'expired'; detail := ARRAY[v_booking.status]; RETURN NEXT; RETURN;
    END IF;
    IF p_amount IS DISTINCT FROM v_booking.amount_paise THEN
        outcome := 'wrong_amount'; detail := ARRAY[v_booking.amount_paise::text];
        RETURN NEXT; RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM payment WHERE id = p_payment AND booking_id <> p_booking) THEN
        outcome := 'payment_reused'; detail := '{}'; RETURN NEXT; RETURN;
    END IF;
    v_wanted := ARRAY(SELECT seat_id FROM booking_seat WHERE booking_id = p_booking
                      ORDER BY seat_id);
    -- Under READ COMMITTED a waiter can skip a row that changed while it
    -- waited: count what was locked, and sell only if every seat was.
    SELECT count(*), coalesce(array_agg(s.seat_id ORDER BY s.seat_id) FILTER (WHERE NOT (
               (s.status = 'LOCKED' AND s.hold_booking_id = p_booking
                AND s.fence_token = v_booking.fence_token)
               OR s.status = 'AVAILABLE')), '{}')
    INTO v_locked, v_taken
    FROM (SELECT ss.seat_id, ss.status, ss.hold_booking_id, ss.fence_token FROM show_seat ss
          WHERE ss.show_id = p_show AND ss.seat_id = ANY (v_wanted)
          ORDER BY ss.seat_id FOR UPDATE) s;
    IF v_locked <> cardinality(v_wanted) THEN
        v_taken := v_taken || ARRAY(SELECT x FROM unnest(v_wanted) x WHERE NOT EXISTS (
            SELECT 1 FROM show_seat WHERE show_id = p_show AND seat_id = x));
    END IF;
    IF cardinality(v_taken) > 0 THEN
        outcome := 'seats_taken'; detail := v_taken; RETURN NEXT; RETURN;
    END IF;
    UPDATE show_seat SET status = 'BOOKED', booked_booking_id = p_booking,
           hold_booking_id = NULL, hold_expires_at = NULL, updated_at = now()
    WHERE show_id = p_show AND seat_id = ANY (v_wanted);
    UPDATE booking_seat SET sold = true WHERE booking_id = p_booking;  -- unique per seat
    UPDATE booking SET status = 'CONFIRMED', payment_id = p_payment, updated_at = now()
    WHERE id = p_booking;
    INSERT INTO payment (id, booking_id, amount_paise, status)
    VALUES (p_payment, p_booking, v_booking.amount_paise, p_payment_status)
    ON CONFLICT (id) DO UPDATE SET status = p_payment_status, updated_at = now()
    WHERE payment.booking_id = EXCLUDED.booking_id;
    IF NOT FOUND THEN  -- raced with another booking paying with the same id: undo all
        RAISE EXCEPTION 'payment_reused' USING ERRCODE = 'P0001';
    END IF;
    INSERT INTO mirror_change (show_id, booking_id, op, seat_id)
    SELECT p_show, p_booking, 'book', x FROM unnest(v_wanted) x;
    INSERT INTO outbox (kind, payload) VALUES
        ('ticket', jsonb_build_object('booking_id', p_booking)),
        ('notification', jsonb_build_object('booking_id', p_booking, 'event', 'confirmed'));
    outcome := 'sold'; detail := v_wanted;
    RETURN NEXT;
END $$;

-- The reconciler looks at shows whose bookings changed lately.
CREATE INDEX booking_by_update ON booking (updated_at);
