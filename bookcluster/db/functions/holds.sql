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
    -- The caps count live holds through booking_live_by_user and
    -- booking_active_by_address (user or address, then show); their expiry is tested
    -- as `(expires_at > now()) IS TRUE`, the same test kept out of the index conditions,
    -- so no plan (a generic one made while few holds were live) scans booking_to_sweep,
    -- which holds every live hold of the region.
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
        AND (expires_at > now()) IS TRUE) >= p_max_holds THEN
        token := NULL; refused := '{}'; limit_hit := 'holds_per_user';
        RETURN NEXT;
        RETURN;
    END IF;
    IF (SELECT count(*) FROM booking b JOIN booking_seat bs ON bs.booking_id = b.id
        WHERE b.user_id = p_user AND b.show_id = p_show AND b.status = 'INITIATED'
        AND (b.expires_at > now()) IS TRUE) + cardinality(p_seats) > p_max_seats THEN
        token := NULL; refused := '{}'; limit_hit := 'seats_per_show';
        RETURN NEXT;
        RETURN;
    END IF;
    IF p_address IS NOT NULL THEN
        -- Many users of one address are recorded one at a time too.
        PERFORM pg_advisory_xact_lock(hashtextextended('bc_address:' || p_address, 0));
        IF (SELECT count(*) FROM booking WHERE client_address = p_address
            AND status = 'INITIATED' AND (expires_at > now()) IS TRUE) >= p_max_address_holds THEN
            token := NULL; refused := '{}'; limit_hit := 'holds_per_address';
            RETURN NEXT;
            RETURN;
        END IF;
        IF (SELECT count(*) FROM booking b JOIN booking_seat bs ON bs.booking_id = b.id
            WHERE b.client_address = p_address AND b.show_id = p_show
            AND b.status = 'INITIATED' AND (b.expires_at > now()) IS TRUE)
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

-- The holds of one node's event-loop turn to this region, in one call and one commit
-- (bookcluster/booking/batcher.py). p_items: a jsonb array of objects with the
-- arguments of bc_record_hold that differ per hold: show, seats, booking, user,
-- expires, prices, hold_key, epoch, address (null: no address caps); the caps are the
-- batch's. Returns one row per item (`item`: its index in p_items, from 0) with
-- bc_record_hold's outcome columns and, for an item whose theatre this region may not
-- write at its epoch, `fence`/`fence_detail`: the message and DETAIL bc_own would have
-- raised ('bc_moved' / 'bc_theatre_moving'), the other columns NULL. An item that is
-- refused, capped, replayed or fenced out never fails its neighbours: each is recorded
-- by bc_record_hold as a single hold would be, one after another (so caps count the
-- batch's earlier items, and an item that wants a seat an earlier one took is refused).
--
-- ONE global lock order, which every writer of holds, seats and bookings follows, so a
-- batch, a single hold, confirm, extend, cancel, the sweeper and a move's freeze never
-- wait for each other in a cycle:
--   1. theatre locks (bc_theatre_lock; shared for writes, exclusive for a freeze),
--      in key order;
--   2. user locks ('bc_user:'), in key order;
--   3. address locks ('bc_address:'), in key order;
--   4. booking rows (confirm, extend, cancel, the sweeper: only existing bookings,
--      which a hold never locks: it inserts a new one);
--   5. show_seat rows, in (show_id, seat_id) order.
-- A single hold takes one of each of 1-3 and its seats in seat order; a batch takes
-- all its locks of each class, sorted, before any of the next, and only then records
-- its items (bc_record_hold re-takes locks the transaction holds already: no wait).
CREATE OR REPLACE FUNCTION bc_record_holds(p_items jsonb, p_max_hold interval,
                                           p_max_seats integer, p_max_holds integer,
                                           p_max_address_seats integer,
                                           p_max_address_holds integer)
RETURNS TABLE (item integer, token bigint, refused text[], limit_hit text, replayed boolean,
               fence text, fence_detail text)
LANGUAGE plpgsql AS $$
DECLARE
    v record;
    v_fence text[];
    v_detail text[];
BEGIN
    -- 1-3: the advisory locks, each class sorted.
    PERFORM pg_advisory_xact_lock_shared(t.k) FROM (
        SELECT DISTINCT bc_theatre_lock(sc.theatre_id) AS k
        FROM jsonb_to_recordset(p_items) AS x (show bigint)
        JOIN show sh ON sh.id = x.show JOIN screen sc ON sc.id = sh.screen_id
        ORDER BY 1) t;
    PERFORM pg_advisory_xact_lock(t.k) FROM (
        SELECT DISTINCT hashtextextended('bc_user:' || x."user", 0) AS k
        FROM jsonb_to_recordset(p_items) AS x ("user" text) ORDER BY 1) t;
    PERFORM pg_advisory_xact_lock(t.k) FROM (
        SELECT DISTINCT hashtextextended('bc_address:' || x.address, 0) AS k
        FROM jsonb_to_recordset(p_items) AS x (address text)
        WHERE x.address IS NOT NULL ORDER BY 1) t;
    -- The fence of every item, as bc_own decides it (a new statement, so a snapshot
    -- taken under the theatre locks: a freeze that committed before is seen).
    SELECT array_agg(f.fence ORDER BY f.ord), array_agg(f.detail ORDER BY f.ord)
    INTO v_fence, v_detail
    FROM (SELECT x.ord,
                 CASE WHEN o.theatre_id IS NULL OR o.state = 'MOVED'
                           OR o.epoch > x.epoch THEN 'bc_moved'
                      WHEN o.state = 'FROZEN' THEN 'bc_theatre_moving' END AS fence,
                 CASE WHEN o.theatre_id IS NULL THEN ' 0'
                      WHEN o.state = 'MOVED' THEN o.owner || ' ' || o.epoch
                      WHEN o.state = 'FROZEN' THEN o.owner
                      WHEN o.epoch > x.epoch THEN ' ' || o.epoch END AS detail
          FROM ROWS FROM (jsonb_to_recordset(p_items) AS (show bigint, epoch integer))
             WITH ORDINALITY AS x (show, epoch, ord)
          LEFT JOIN show sh ON sh.id = x.show
          LEFT JOIN screen sc ON sc.id = sh.screen_id
          LEFT JOIN theatre_owner o ON o.theatre_id = sc.theatre_id) f;
    -- 5: the seat rows of the items that may be written, in (show_id, seat_id) order.
    PERFORM 1 FROM show_seat ss
    WHERE (ss.show_id, ss.seat_id) IN (
        SELECT x.show, s.seat
        FROM ROWS FROM (jsonb_to_recordset(p_items) AS (show bigint, seats text[]))
             WITH ORDINALITY AS x (show, seats, ord),
             unnest(x.seats) AS s (seat)
        WHERE v_fence[x.ord::integer] IS NULL)
    ORDER BY ss.show_id, ss.seat_id FOR UPDATE OF ss;
    FOR v IN SELECT x.* FROM ROWS FROM (jsonb_to_recordset(p_items) AS (
                 show bigint, seats text[], booking text, "user" text, expires timestamptz,
                 prices integer[], hold_key text, epoch integer, address text))
             WITH ORDINALITY AS x (show, seats, booking, "user", expires, prices, hold_key,
                                   epoch, address, ord)
             ORDER BY x.ord LOOP
        item := v.ord::integer - 1;
        fence := v_fence[v.ord::integer];
        fence_detail := v_detail[v.ord::integer];
        IF fence IS NOT NULL THEN
            token := NULL; refused := NULL; limit_hit := NULL; replayed := NULL;
        ELSE
            SELECT h.token, h.refused, h.limit_hit, h.replayed
            INTO token, refused, limit_hit, replayed
            FROM bc_record_hold(v.show, v.seats, v.booking, v."user", v.expires, p_max_hold,
                                v.prices, p_max_seats, p_max_holds, v.hold_key, v.epoch,
                                v.address, p_max_address_seats, p_max_address_holds) h;
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;
