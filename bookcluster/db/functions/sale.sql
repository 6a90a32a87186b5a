-- The sale: the fenced sale of a held booking (bc_sell) and the confirm around it
-- (bc_confirm, bookcluster/booking/confirm.py), each one statement.

-- The fenced sale. Locks the booking row, then its seat rows
-- in seat-id order; every seat must still carry this booking's fencing token
-- (or be AVAILABLE with no hold: a lapsed hold nobody took, re-taken under the
-- row lock). Returns (outcome, detail):
--   ('sold', seats)            seats BOOKED, booking CONFIRMED, payment + outbox written
--   ('not_pending', {status})  booking already CONFIRMED
--   ('expired', {status})      booking CANCELLED or EXPIRED
--   ('seats_taken', seats)     these seats now belong to someone else
--   ('payment_reused', {})     the payment id paid another booking
--   ('wrong_amount', {amount}) p_amount (what the gateway captured) is not exactly the
--                              booking's amount
-- Refusals change nothing.
-- Fenced (its callers, bc_confirm and the payment saga, check the epoch first; this
-- re-check takes the same shared lock once more).
CREATE OR REPLACE FUNCTION bc_sell(p_show bigint, p_booking text, p_payment text,
                                   p_payment_status text, p_amount integer)
RETURNS TABLE (outcome text, detail text[]) LANGUAGE plpgsql AS $$
DECLARE
    v_booking booking%ROWTYPE;
    v_wanted text[];
    v_locked integer;
    v_taken text[];
BEGIN
    PERFORM bc_own(p_show, NULL);
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
        -- The mail's data, which this transaction has: its job need not read the booking.
        ('notification', jsonb_build_object('booking_id', p_booking, 'event', 'confirmed',
                                            'user_id', v_booking.user_id,
                                            'seat_ids', to_jsonb(v_wanted)));
    outcome := 'sold'; detail := v_wanted;
    RETURN NEXT;
END $$;

-- Confirm in one round trip (bookcluster/booking/confirm.py): claim the Idempotency-Key for
-- the booking's owner, sell (bc_sell: fencing, seats, payment, mirror rows, outbox)
-- and store the answer, all in the one statement's transaction.
--
-- p_amount is what the gateway captured for this booking under p_payment, or NULL
-- when it did not (or did not answer): a key already used still replays its answer,
-- a new claim raises 'bc_not_captured' and nothing is kept. Outcomes:
--   ('replay', {}, status, body)        the key's stored answer;
--   ('not_found' | 'key_reused', {}, NULL, NULL);
--   ('sold', seats sold, 200, body)     sold now; the body is stored;
--   ('sold_before', {}, 200, body)      the payment's webhook already sold it;
--   (refusal, detail, 409, {outcome, detail})  stored as the refusal's outcome, which
--                                       the node renders the same way on every replay.
-- Raises 'bc_wrong_amount' (DETAIL: the booking's amount) and 'bc_deadline' (past
-- p_deadline) having changed nothing: past its caller's deadline nothing commits.
-- Fenced first (a key's stored answer replays only where the theatre lives); each key
-- records its booking (a move takes it along).
CREATE OR REPLACE FUNCTION bc_confirm(p_show bigint, p_booking text, p_user text, p_key text,
                           p_hash text, p_payment text, p_amount integer, p_region text,
                           p_deadline timestamptz, p_epoch integer)
RETURNS TABLE (outcome text, detail text[], answer_status integer, answer_body text)
LANGUAGE plpgsql SET TimeZone = 'UTC' AS $$
DECLARE
    v_claimed text;
    v_stored record;
BEGIN
    PERFORM bc_own(p_show, p_epoch);
    -- A duplicate in flight makes this wait on the key's unique index until it ends.
    INSERT INTO idempotency (user_id, key, request_hash, status_code, response_body,
                             booking_id)
    SELECT b.user_id, p_key, p_hash, 0, '', b.id FROM booking b
    WHERE b.id = p_booking AND b.user_id = p_user
    ON CONFLICT DO NOTHING RETURNING user_id INTO v_claimed;
    detail := '{}';
    IF v_claimed IS NULL THEN
        SELECT b.id AS booking, i.request_hash, i.status_code, i.response_body INTO v_stored
        FROM booking b LEFT JOIN idempotency i ON i.user_id = b.user_id AND i.key = p_key
        WHERE b.id = p_booking AND b.user_id = p_user;
        IF v_stored.booking IS NULL THEN
            outcome := 'not_found';
        ELSIF v_stored.request_hash IS DISTINCT FROM p_hash THEN
            outcome := 'key_reused';
        ELSE
            outcome := 'replay';
            answer_status := v_stored.status_code;
            answer_body := v_stored.response_body;
        END IF;
        RETURN NEXT;
        RETURN;
    END IF;
    IF p_amount IS NULL THEN
        RAISE EXCEPTION 'bc_not_captured' USING ERRCODE = 'P0001';
    END IF;
    SELECT s.outcome, s.detail INTO outcome, detail
    FROM bc_sell(p_show, p_booking, p_payment, 'CAPTURED', p_amount) s;
    IF outcome = 'wrong_amount' THEN
        RAISE EXCEPTION 'bc_wrong_amount' USING ERRCODE = 'P0001', DETAIL = detail[1];
    END IF;
    IF outcome = 'not_pending' AND EXISTS (SELECT 1 FROM booking
            WHERE id = p_booking AND payment_id = p_payment) THEN
        outcome := 'sold_before';
        detail := '{}';
    END IF;
    IF outcome IN ('sold', 'sold_before') THEN
        answer_status := 200;
        SELECT json_build_object(
                   'booking_id', b.id, 'user_id', b.user_id, 'show_id', b.show_id,
                   'region', p_region,
                   'seat_ids', (SELECT json_agg(bs.seat_id ORDER BY bs.seat_id)
                                FROM booking_seat bs WHERE bs.booking_id = b.id),
                   'status', b.status, 'amount_paise', b.amount_paise,
                   'payment_id', b.payment_id, 'created_at', b.created_at,
                   'expires_at', b.expires_at, 'hold_token', b.fence_token)::text
        INTO answer_body FROM booking b WHERE b.id = p_booking;
    ELSE
        answer_status := 409;
        answer_body := json_build_object('outcome', outcome, 'detail', detail)::text;
    END IF;
    UPDATE idempotency SET status_code = answer_status, response_body = answer_body
    WHERE user_id = p_user AND key = p_key;
    IF clock_timestamp() > p_deadline THEN
        RAISE EXCEPTION 'bc_deadline' USING ERRCODE = 'P0001';
    END IF;
    RETURN NEXT;
END $$;
