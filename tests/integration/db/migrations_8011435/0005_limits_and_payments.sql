-- Abuse limits and payment before sale.
--
-- bc_record_hold also enforces the per-user caps: active holds of a user in
-- this region and seats a user holds at once in one show. Returns
-- (token, '{}', NULL), or (NULL, refused seats, NULL), or (NULL, '{}', cap) having
-- changed nothing.
--
-- bc_sell takes the amount the gateway captured and sells only for exactly the
-- booking's amount; otherwise ('wrong_amount', {booking amount}), nothing changed.
-- A booking remembers the payment intent created for it (`pay`), so asking to
-- pay twice returns the same intent instead of charging twice.

ALTER TABLE booking ADD COLUMN intent_id text;

DROP FUNCTION bc_record_hold(bigint, text[], text, text, timestamptz, interval, integer[]);
DROP FUNCTION bc_sell(bigint, text, text, text);

CREATE FUNCTION bc_record_hold(p_show bigint, p_seats text[], p_booking text, p_user text,
                               p_expires timestamptz, p_max_hold interval, p_prices integer[],
                               p_max_seats integer, p_max_holds integer)
RETURNS TABLE (token bigint, refused text[], limit_hit text) LANGUAGE plpgsql AS $$
DECLARE
    v_free text[];
BEGIN
    -- One user's holds are recorded one at a time (the lock ends with the
    -- statement's transaction), so the caps hold under concurrent requests.
    PERFORM pg_advisory_xact_lock(hashtextextended('bc_user:' || p_user, 0));
    IF (SELECT count(*) FROM booking WHERE user_id = p_user AND status = 'INITIATED'
        AND expires_at > now()) >= p_max_holds THEN
        token := NULL; refused := '{}'; limit_hit := 'holds_per_user';
        RETURN NEXT;
        RETURN;
    END IF;
    IF (SELECT count(*) FROM booking b JOIN booking_seat bs ON bs.booking_id = b.id
        WHERE b.user_id = p_user AND b.show_id = p_show AND b.status = 'INITIATED'
        AND b.expires_at > now()) + cardinality(p_seats) > p_max_seats THEN
        token := NULL; refused := '{}'; limit_hit := 'seats_per_show';
        RETURN NEXT;
        RETURN;
    END IF;
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
    limit_hit := NULL;
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

-- Outcomes as in 0004, plus ('wrong_amount', {booking amount}).
CREATE FUNCTION bc_sell(p_show bigint, p_booking text, p_payment text, p_payment_status text,
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
    INSERT INTO outbox (kind, payload) VALUES
        ('ticket', jsonb_build_object('booking_id', p_booking)),
        ('notification', jsonb_build_object('booking_id', p_booking, 'event', 'confirmed'));
    outcome := 'sold'; detail := v_wanted;
    RETURN NEXT;
END $$;
