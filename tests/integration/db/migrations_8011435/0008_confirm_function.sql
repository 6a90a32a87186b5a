-- Confirm in one round trip (region_node/confirm.py): claim the Idempotency-Key for
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

CREATE FUNCTION bc_confirm(p_show bigint, p_booking text, p_user text, p_key text,
                           p_hash text, p_payment text, p_amount integer, p_region text,
                           p_deadline timestamptz)
RETURNS TABLE (outcome text, detail text[], answer_status integer, answer_body text)
LANGUAGE plpgsql SET TimeZone = 'UTC' AS $$
DECLARE
    v_claimed text;
    v_stored record;
BEGIN
    -- A duplicate in flight makes this wait on the key's unique index until it ends.
    INSERT INTO idempotency (user_id, key, request_hash, status_code, response_body)
    SELECT b.user_id, p_key, p_hash, 0, '' FROM booking b
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
