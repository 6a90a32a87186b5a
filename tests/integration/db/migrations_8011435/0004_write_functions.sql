-- The hold record and the fenced sale as single statements: one round trip
-- each to a primary that may be a WAN hop away (40 ms each way in India).

-- Records a hold that Redis granted: checks every seat is free in PostgreSQL
-- (PostgreSQL decides), stamps a new fencing token on each, writes the booking.
-- Returns (token, '{}') or (NULL, refused seats) having changed nothing.
CREATE FUNCTION bc_record_hold(p_show bigint, p_seats text[], p_booking text, p_user text,
                               p_expires timestamptz, p_max_hold interval, p_prices integer[])
RETURNS TABLE (token bigint, refused text[]) LANGUAGE plpgsql AS $$
DECLARE
    v_free text[];
BEGIN
    -- Lock in seat-id order: overlapping holds never deadlock.
    SELECT coalesce(array_agg(s.seat_id), '{}') INTO v_free
    FROM (SELECT ss.seat_id, ss.status, ss.hold_expires_at FROM show_seat ss
          WHERE ss.show_id = p_show AND ss.seat_id = ANY (p_seats)
          ORDER BY ss.seat_id FOR UPDATE) s
    WHERE s.status = 'AVAILABLE' OR (s.status = 'LOCKED' AND s.hold_expires_at <= now());
    refused := ARRAY(SELECT x FROM unnest(p_seats) x WHERE x <> ALL (v_free) ORDER BY x);
    IF cardinality(refused) > 0 THEN
        token := NULL;
        RETURN NEXT;
        RETURN;
    END IF;
    token := nextval('fence_token_seq');
    UPDATE show_seat SET status = 'LOCKED', hold_booking_id = p_booking,
           hold_expires_at = p_expires, fence_token = token, updated_at = now()
    WHERE show_id = p_show AND seat_id = ANY (p_seats);
    INSERT INTO booking (id, user_id, show_id, status, fence_token, amount_paise, expires_at,
                         hold_deadline)
    VALUES (p_booking, p_user, p_show, 'INITIATED', token,
            (SELECT sum(x) FROM unnest(p_prices) x), p_expires, now() + p_max_hold);
    INSERT INTO booking_seat (booking_id, show_id, seat_id, price_paise)
    SELECT p_booking, p_show, t.seat, t.price FROM unnest(p_seats, p_prices) AS t (seat, price);
    refused := '{}';
    RETURN NEXT;
END $$;

-- The fenced sale of a held booking. Locks the booking row, then its seat rows
-- in seat-id order; every seat must still carry this booking's fencing token
-- (or be AVAILABLE with no hold: a lapsed hold nobody took, re-taken under the
-- row lock). Returns (outcome, detail):
--   ('sold', seats)            seats BOOKED, booking CONFIRMED, payment + outbox written
--   ('not_pending', {status})  booking already CONFIRMED
--   ('expired', {status})      booking CANCELLED or EXPIRED
--   ('seats_taken', seats)     these seats now belong to someone else
--   ('payment_reused', {})     the payment id paid another booking
-- Refusals change nothing.
CREATE FUNCTION bc_sell(p_show bigint, p_booking text, p_payment text, p_payment_status text)
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
    INSERT INTO outbox (kind, payload) VALUES
        ('ticket', jsonb_build_object('booking_id', p_booking)),
        ('notification', jsonb_build_object('booking_id', p_booking, 'event', 'confirmed'));
    outcome := 'sold'; detail := v_wanted;
    RETURN NEXT;
END $$;
