-- Theatre ownership as data, fenced by the topology epoch (region_node/ownership.py).
--
-- Each region records the theatres it owns and since which epoch (OWNED), the
-- one it is moving out (FROZEN: writes refused as `theatre_moving` until the move
-- commits or aborts), and those it gave away (MOVED: `owner` took it at `epoch`),
-- so a node with a stale map is told where the theatre went. Every write runs
-- `bc_own` first, in its own transaction: it takes the theatre's shared advisory
-- lock and then (a fresh snapshot: plpgsql takes one per statement) reads the
-- row. A move's freeze takes the same lock exclusively, so it waits for every
-- write in flight and every later write sees FROZEN.

CREATE TABLE theatre_owner (
    theatre_id  text PRIMARY KEY REFERENCES theatre (id),
    state       text NOT NULL CHECK (state IN ('OWNED', 'FROZEN', 'MOVED')),
    epoch       integer NOT NULL,      -- OWNED/FROZEN: owned since; MOVED: moved at
    owner       text,                  -- FROZEN: the move's target; MOVED: the new owner
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'OWNED') = (owner IS NULL))
);

-- The topology as applied (`bookcluster topology apply` / `move` write the same
-- rows to every region): a node whose file is older adopts the newest from here.
CREATE TABLE cluster_topology (
    epoch       integer PRIMARY KEY,
    document    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- Moves out of this region, newest last: what a crashed mover resumes or rolls back,
-- and what the operator page lists. At most one unfinished move per theatre.
CREATE TABLE theatre_move (
    id          bigserial PRIMARY KEY,
    theatre_id  text NOT NULL,
    source      text NOT NULL,
    target      text NOT NULL,
    from_epoch  integer NOT NULL,
    to_epoch    integer NOT NULL,
    step        text NOT NULL CHECK (step IN ('frozen', 'committed', 'flipped', 'done',
                                              'aborted')),
    detail      jsonb NOT NULL DEFAULT '{}',
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX theatre_move_unfinished ON theatre_move (theatre_id)
    WHERE step NOT IN ('done', 'aborted');

-- Idempotency keys say whose booking they answered, so a move takes them along.
ALTER TABLE idempotency ADD COLUMN booking_id text;
CREATE INDEX idempotency_by_booking ON idempotency (booking_id);
-- A move reads (and its source then deletes) one theatre's rows by its shows: without
-- these, each of those statements scanned a whole table while the theatre was frozen.
CREATE INDEX booking_by_show ON booking (show_id);
CREATE INDEX booking_seat_by_show ON booking_seat (show_id);
CREATE INDEX notification_by_booking ON notification (booking_id);
CREATE INDEX payment_event_by_show ON payment_event
    ((substring(booking_id from '^b([0-9]+)-')::bigint));
CREATE INDEX mirror_change_by_show ON mirror_change (show_id);

CREATE FUNCTION bc_theatre_lock(p_theatre text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT hashtextextended('bc_theatre:' || p_theatre, 0) $$;

-- The fence of every write: this region owns the show's theatre, not frozen, since an
-- epoch no newer than the caller's (p_epoch NULL: any). Raises, having changed nothing:
--   'bc_moved'           DETAIL '<owner> <epoch>' (owner empty: this region, the
--                        caller's map is older than its ownership; '' 0: unknown);
--   'bc_theatre_moving'  DETAIL the move's target.
-- The shared lock is held to the end of the caller's transaction.
CREATE FUNCTION bc_own(p_show bigint, p_epoch integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_theatre text;
    v_owner theatre_owner%ROWTYPE;
BEGIN
    SELECT sc.theatre_id INTO v_theatre FROM show sh JOIN screen sc ON sc.id = sh.screen_id
    WHERE sh.id = p_show;
    IF v_theatre IS NULL THEN
        RAISE EXCEPTION 'bc_moved' USING ERRCODE = 'P0001', DETAIL = ' 0';
    END IF;
    PERFORM pg_advisory_xact_lock_shared(bc_theatre_lock(v_theatre));
    SELECT * INTO v_owner FROM theatre_owner WHERE theatre_id = v_theatre;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'bc_moved' USING ERRCODE = 'P0001', DETAIL = ' 0';
    ELSIF v_owner.state = 'MOVED' THEN
        RAISE EXCEPTION 'bc_moved' USING ERRCODE = 'P0001',
            DETAIL = v_owner.owner || ' ' || v_owner.epoch;
    ELSIF v_owner.state = 'FROZEN' THEN
        RAISE EXCEPTION 'bc_theatre_moving' USING ERRCODE = 'P0001', DETAIL = v_owner.owner;
    ELSIF v_owner.epoch > p_epoch THEN
        RAISE EXCEPTION 'bc_moved' USING ERRCODE = 'P0001', DETAIL = ' ' || v_owner.epoch;
    END IF;
END $$;

-- The theatres among p_theatres that this region may write now (OWNED), each with its
-- shared lock taken (held to the end of the transaction). A theatre whose lock a
-- freeze holds is skipped, not waited for: for background writers (the sweeper).
CREATE FUNCTION bc_writable(p_theatres text[]) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    v_locked text[];
BEGIN
    v_locked := ARRAY(SELECT t FROM unnest(p_theatres) t
                      WHERE pg_try_advisory_xact_lock_shared(bc_theatre_lock(t)));
    -- A new statement, so a new snapshot: a freeze that committed before we took the
    -- lock is seen here.
    RETURN ARRAY(SELECT theatre_id FROM theatre_owner
                 WHERE theatre_id = ANY (v_locked) AND state = 'OWNED');
END $$;

-- bc_record_hold as in 0007, fenced.
DROP FUNCTION bc_record_hold(bigint, text[], text, text, timestamptz, interval, integer[],
                             integer, integer, text);

CREATE FUNCTION bc_record_hold(p_show bigint, p_seats text[], p_booking text, p_user text,
                               p_expires timestamptz, p_max_hold interval, p_prices integer[],
                               p_max_seats integer, p_max_holds integer, p_hold_key text,
                               p_epoch integer)
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
                         hold_deadline, hold_key)
    VALUES (p_booking, p_user, p_show, 'INITIATED', token,
            (SELECT sum(x) FROM unnest(p_prices) x), p_expires, now() + p_max_hold, p_hold_key);
    INSERT INTO booking_seat (booking_id, show_id, seat_id, price_paise)
    SELECT p_booking, p_show, t.seat, t.price FROM unnest(p_seats, p_prices) AS t (seat, price);
    refused := '{}';
    RETURN NEXT;
END $$;

-- bc_sell as in 0006, fenced (its callers, bc_confirm and the payment saga, check the
-- epoch first; this re-check takes the same shared lock once more).
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
        ('notification', jsonb_build_object('booking_id', p_booking, 'event', 'confirmed'));
    outcome := 'sold'; detail := v_wanted;
    RETURN NEXT;
END $$;

-- bc_confirm as in 0008, fenced first (a key's stored answer replays only where the
-- theatre lives), and each key records its booking (a move takes it along).
DROP FUNCTION bc_confirm(bigint, text, text, text, text, text, integer, text, timestamptz);

CREATE FUNCTION bc_confirm(p_show bigint, p_booking text, p_user text, p_key text,
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

-- A move's copy (cluster/moves.py). While the theatre still sells, the source exports
-- its rows as one document and the target imports them in a transaction it keeps open
-- (invisible to everyone); once the theatre is frozen, the source exports what changed
-- since (`p_since`: rows changed after it) and the target applies that and commits,
-- recording itself as the owner. The frozen part is two short round trips.
CREATE FUNCTION bc_export_theatre(p_shows bigint[], p_since timestamptz) RETURNS jsonb
LANGUAGE sql STABLE AS $$
WITH bookings AS (SELECT id FROM booking WHERE show_id = ANY (p_shows)),
changed AS (SELECT id FROM booking WHERE show_id = ANY (p_shows)
            AND (p_since IS NULL OR updated_at > p_since OR created_at > p_since))
SELECT jsonb_build_object(
    'show_seat', (SELECT coalesce(jsonb_agg(t), '[]') FROM show_seat t
                  WHERE show_id = ANY (p_shows) AND (p_since IS NULL OR updated_at > p_since)),
    'booking', (SELECT coalesce(jsonb_agg(t), '[]') FROM booking t
                WHERE id IN (SELECT id FROM changed)),
    -- A seat row changes (sold) only with its booking.
    'booking_seat', (SELECT coalesce(jsonb_agg(t), '[]') FROM booking_seat t
                     WHERE booking_id IN (SELECT id FROM changed)),
    'payment', (SELECT coalesce(jsonb_agg(t), '[]') FROM payment t
                WHERE booking_id IN (SELECT id FROM bookings)
                AND (p_since IS NULL OR updated_at > p_since OR created_at > p_since)),
    -- Events of booking ids of these shows, also ids never issued (refunds).
    'payment_event', (SELECT coalesce(jsonb_agg(t), '[]') FROM payment_event t
                      WHERE substring(booking_id from '^b([0-9]+)-')::bigint = ANY (p_shows)
                      AND (p_since IS NULL OR received_at > p_since
                           OR processed_at > p_since)),
    'ticket', (SELECT coalesce(jsonb_agg(t), '[]') FROM ticket t
               WHERE booking_id IN (SELECT id FROM bookings)
               AND (p_since IS NULL OR created_at > p_since)),
    'notification', (SELECT coalesce(jsonb_agg(t), '[]') FROM notification t
                     WHERE booking_id IN (SELECT id FROM bookings)
                     AND (p_since IS NULL OR created_at > p_since)),
    -- A key's answer is stored in the transaction that claimed it.
    'idempotency', (SELECT coalesce(jsonb_agg(t), '[]') FROM idempotency t
                    WHERE booking_id IN (SELECT id FROM bookings)
                    AND (p_since IS NULL OR created_at > p_since)),
    -- Jobs not relayed yet, always all of them; relayed ones ran (or run) where they
    -- were queued.
    'outbox', (SELECT coalesce(jsonb_agg(t), '[]') FROM outbox t WHERE relayed_at IS NULL
               AND substring(payload->>'booking_id' from '^b([0-9]+)-')::bigint
                   = ANY (p_shows)))
$$;

-- Deletes a theatre's booking rows here (its show ids); returns how many. The source
-- forgets a theatre that moved away with it; the target, rows of an ownership long
-- gone (never the theatre's current ones: it does not own it when it imports).
CREATE FUNCTION bc_forget_theatre(p_shows bigint[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_bookings text[] := ARRAY(SELECT id FROM booking WHERE show_id = ANY (p_shows));
    v_total bigint := 0;
    v_n bigint;
BEGIN
    DELETE FROM idempotency WHERE booking_id = ANY (v_bookings);
    GET DIAGNOSTICS v_n = ROW_COUNT; v_total := v_total + v_n;
    DELETE FROM notification WHERE booking_id = ANY (v_bookings);
    GET DIAGNOSTICS v_n = ROW_COUNT; v_total := v_total + v_n;
    DELETE FROM ticket WHERE booking_id = ANY (v_bookings);
    GET DIAGNOSTICS v_n = ROW_COUNT; v_total := v_total + v_n;
    DELETE FROM payment WHERE booking_id = ANY (v_bookings);
    GET DIAGNOSTICS v_n = ROW_COUNT; v_total := v_total + v_n;
    DELETE FROM payment_event
    WHERE substring(booking_id from '^b([0-9]+)-')::bigint = ANY (p_shows);
    GET DIAGNOSTICS v_n = ROW_COUNT; v_total := v_total + v_n;
    DELETE FROM booking_seat WHERE show_id = ANY (p_shows);
    GET DIAGNOSTICS v_n = ROW_COUNT; v_total := v_total + v_n;
    DELETE FROM booking WHERE show_id = ANY (p_shows);
    GET DIAGNOSTICS v_n = ROW_COUNT; v_total := v_total + v_n;
    DELETE FROM show_seat WHERE show_id = ANY (p_shows);
    GET DIAGNOSTICS v_n = ROW_COUNT; v_total := v_total + v_n;
    DELETE FROM mirror_change WHERE show_id = ANY (p_shows);
    GET DIAGNOSTICS v_n = ROW_COUNT; v_total := v_total + v_n;
    DELETE FROM outbox
    WHERE substring(payload->>'booking_id' from '^b([0-9]+)-')::bigint = ANY (p_shows);
    GET DIAGNOSTICS v_n = ROW_COUNT; v_total := v_total + v_n;
    RETURN v_total;
END $$;

-- Rows of a table as bc_export_theatre wrote them, inserted or, where their primary key
-- exists, replacing the row (a catch-up after the first copy).
CREATE FUNCTION bc_upsert_rows(p_table regclass, p_rows jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_cols text;
    v_new text;
    v_key text;
BEGIN
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum),
           string_agg('EXCLUDED.' || quote_ident(attname), ', ' ORDER BY attnum)
    INTO v_cols, v_new
    FROM pg_attribute WHERE attrelid = p_table AND attnum > 0 AND NOT attisdropped;
    SELECT string_agg(quote_ident(a.attname), ', ') INTO v_key
    FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
    WHERE i.indrelid = p_table AND i.indisprimary;
    EXECUTE format('INSERT INTO %s SELECT * FROM jsonb_populate_recordset(NULL::%s, $1) '
                   'ON CONFLICT (%s) DO UPDATE SET (%s) = ROW(%s)',
                   p_table, p_table, v_key, v_cols, v_new) USING p_rows;
END $$;

-- Imports bc_export_theatre's document in the caller's transaction: the first copy
-- (p_owner_epoch NULL; the caller first forgets any rows of an ownership long gone,
-- bc_forget_theatre), a catch-up, or both at once; with p_owner_epoch, records this
-- region as the theatre's owner since that epoch (the commit is the move's decision).
CREATE FUNCTION bc_import_theatre(p_theatre text, p_shows bigint[], p_rows jsonb,
                                  p_owner_epoch integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bc_upsert_rows('show_seat', p_rows->'show_seat');
    PERFORM bc_upsert_rows('booking', p_rows->'booking');
    PERFORM bc_upsert_rows('booking_seat', p_rows->'booking_seat');
    PERFORM bc_upsert_rows('payment', p_rows->'payment');
    PERFORM bc_upsert_rows('payment_event', p_rows->'payment_event');
    PERFORM bc_upsert_rows('ticket', p_rows->'ticket');
    PERFORM bc_upsert_rows('notification', p_rows->'notification');
    PERFORM bc_upsert_rows('idempotency', p_rows->'idempotency');
    -- Pending jobs: the latest export's, in place of an earlier one's (new ids here).
    DELETE FROM outbox WHERE relayed_at IS NULL
        AND substring(payload->>'booking_id' from '^b([0-9]+)-')::bigint = ANY (p_shows);
    INSERT INTO outbox (kind, payload, created_at, relayed_at)
    SELECT kind, payload, created_at, relayed_at
    FROM jsonb_populate_recordset(NULL::outbox, p_rows->'outbox');
    IF p_owner_epoch IS NOT NULL THEN
        -- Tokens stamped here stay above the copied ones (a seat's newest hold has the
        -- highest token).
        PERFORM setval('fence_token_seq', greatest(
            (SELECT last_value FROM fence_token_seq),
            (SELECT coalesce(max(fence_token), 1) FROM show_seat
             WHERE show_id = ANY (p_shows))));
        INSERT INTO theatre_owner (theatre_id, state, epoch)
        VALUES (p_theatre, 'OWNED', p_owner_epoch)
        ON CONFLICT (theatre_id) DO UPDATE
        SET state = 'OWNED', owner = NULL, epoch = p_owner_epoch, updated_at = now();
    END IF;
END $$;
