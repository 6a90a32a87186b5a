-- Holds: recording a hold that Redis granted (bookcluster/booking/holds.py).
--
-- Checks every seat is free in PostgreSQL (PostgreSQL decides), stamps a new fencing
-- token on each, writes the INITIATED booking; one round trip to a primary that may
-- be a WAN hop away. Fenced first (bc_own). Caps, under advisory locks so they hold
-- under concurrent requests: active holds of a user in this region, seats a user
-- holds at once in one show, and the same two per client address (the vouched one
-- behind a forward; the address's lock is taken after the user's, in every hold: no
-- lock-order cycle). An optional Idempotency-Key (p_hold_key) names one booking of the
-- user: a repeat answers `replayed` instead of recording a second hold.
-- Returns (token, '{}', NULL, false), (NULL, refused seats, NULL, false),
-- (NULL, '{}', cap, false) or (NULL, '{}', NULL, true), having changed nothing but in
-- the first case.

-- p_address NULL: the address caps are not checked.
CREATE OR REPLACE FUNCTION bc_record_hold(p_show bigint, p_seats text[], p_booking text, p_user text,
                               p_expires timestamptz, p_max_hold interval, p_prices integer[],
                               p_max_seats integer, p_max_holds integer, p_hold_key text,
                               p_epoch integer, p_address text, p_max_address_seats integer,
                               p_max_address_holds integer)
RETURNS TABLE (token bigint, refused text[], limit_hit text, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_free text[];
BEGIN
    PERFORM bc_own(p_show, p_epoch);
    -- One user's holds are recorded one at a time (the lock ends with the
    -- statement's transaction), so the caps hold under concurrent requests.
    PERFORM pg_advisory_xact_lock(hashtextextended('bc_user:' || p_user, 0));
    replayed := false;
    -- Under the user's lock: a duplicate that raced the first attempt finds its row.
    IF p_hold_key IS NOT NULL AND EXISTS (SELECT 1 FROM booking
            WHERE user_id = p_user AND hold_key = p_hold_key) THEN
        token := NULL; refused := '{}'; limit_hit := NULL; replayed := true;
        RETURN NEXT;
        RETURN;
    END IF;
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
    IF p_address IS NOT NULL THEN
        -- Many users of one address are recorded one at a time too.
        PERFORM pg_advisory_xact_lock(hashtextextended('bc_address:' || p_address, 0));
        IF (SELECT count(*) FROM booking WHERE client_address = p_address
            AND status = 'INITIATED' AND expires_at > now()) >= p_max_address_holds THEN
            token := NULL; refused := '{}'; limit_hit := 'holds_per_address';
            RETURN NEXT;
            RETURN;
        END IF;
        IF (SELECT count(*) FROM booking b JOIN booking_seat bs ON bs.booking_id = b.id
            WHERE b.client_address = p_address AND b.show_id = p_show
            AND b.status = 'INITIATED' AND b.expires_at > now())
            + cardinality(p_seats) > p_max_address_seats THEN
            token := NULL; refused := '{}'; limit_hit := 'seats_per_show_per_address';
            RETURN NEXT;
            RETURN;
        END IF;
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
                         hold_deadline, hold_key, client_address)
    VALUES (p_booking, p_user, p_show, 'INITIATED', token,
            (SELECT sum(x) FROM unnest(p_prices) x), p_expires, now() + p_max_hold, p_hold_key,
            p_address);
    INSERT INTO booking_seat (booking_id, show_id, seat_id, price_paise)
    SELECT p_booking, p_show, t.seat, t.price FROM unnest(p_seats, p_prices) AS t (seat, price);
    refused := '{}';
    RETURN NEXT;
END $$;

-- The signature without the address, for its callers (the benchmark's raw limits).
CREATE OR REPLACE FUNCTION bc_record_hold(p_show bigint, p_seats text[], p_booking text,
                                          p_user text, p_expires timestamptz,
                                          p_max_hold interval, p_prices integer[],
                                          p_max_seats integer, p_max_holds integer,
                                          p_hold_key text, p_epoch integer)
RETURNS TABLE (token bigint, refused text[], limit_hit text, replayed boolean)
LANGUAGE sql AS $$
    SELECT * FROM bc_record_hold(p_show, p_seats, p_booking, p_user, p_expires, p_max_hold,
                                 p_prices, p_max_seats, p_max_holds, p_hold_key, p_epoch,
                                 NULL::text, NULL::integer, NULL::integer);
$$;
