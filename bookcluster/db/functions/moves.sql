-- A move's copy (bookcluster/ops/moves.py). While the theatre still sells, the source exports
-- its rows as one document and the target imports them in a transaction it keeps open
-- (invisible to everyone); once the theatre is frozen, the source exports what changed
-- since (`p_since`: rows changed after it) and the target applies that and commits,
-- recording itself as the owner. The frozen part is two short round trips.
CREATE OR REPLACE FUNCTION bc_export_theatre(p_shows bigint[], p_since timestamptz) RETURNS jsonb
LANGUAGE sql STABLE AS $$
WITH bookings AS (SELECT id FROM booking WHERE show_id = ANY (p_shows)),
changed AS (SELECT id FROM booking WHERE show_id = ANY (p_shows)
            AND (p_since IS NULL OR updated_at > p_since OR created_at > p_since)),
-- The on-sales of these shows (the mover refuses one that also covers another theatre).
onsales AS (SELECT DISTINCT onsale_id AS id FROM onsale_show WHERE show_id = ANY (p_shows))
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
    -- The door's records: every scan (rows are only ever added), each with the nonce of
    -- the scan it refers to, since ids are this region's own and the target gives new
    -- ones; and the theatre's re-entry rule.
    'checkin_scan', (SELECT coalesce(jsonb_agg(to_jsonb(t) || jsonb_build_object(
                                         'prior_nonce', p.nonce) ORDER BY t.id), '[]')
                     FROM checkin_scan t LEFT JOIN checkin_scan p ON p.id = t.prior_scan
                     WHERE t.show_id = ANY (p_shows)
                     AND (p_since IS NULL OR t.recorded_at > p_since)),
    'checkin_theatre', (SELECT coalesce(jsonb_agg(t), '[]') FROM checkin_theatre t
                        WHERE theatre_id IN (SELECT sc.theatre_id FROM show s
                                             JOIN screen sc ON sc.id = s.screen_id
                                             WHERE s.id = ANY (p_shows))),
    -- Jobs not done yet, always all of them: one running now may run again at the
    -- target (at least once).
    'outbox', (SELECT coalesce(jsonb_agg(t), '[]') FROM outbox t WHERE done_at IS NULL
               AND substring(payload->>'booking_id' from '^b([0-9]+)-')::bigint
                   = ANY (p_shows)),
    -- On-sales: their rows (the frontier, the seed) and shows always, whole; joins and
    -- admission steps are only ever added; the passes' claims always all of them (a
    -- claim given back is deleted: the target's are replaced).
    'onsale', (SELECT coalesce(jsonb_agg(t), '[]') FROM onsale t
               WHERE id IN (SELECT id FROM onsales)),
    'onsale_show', (SELECT coalesce(jsonb_agg(t), '[]') FROM onsale_show t
                    WHERE onsale_id IN (SELECT id FROM onsales)),
    'onsale_join', (SELECT coalesce(jsonb_agg(t), '[]') FROM onsale_join t
                    WHERE onsale_id IN (SELECT id FROM onsales)
                    AND (p_since IS NULL OR joined_at > p_since)),
    'onsale_admit', (SELECT coalesce(jsonb_agg(t), '[]') FROM onsale_admit t
                     WHERE onsale_id IN (SELECT id FROM onsales)
                     AND (p_since IS NULL OR at > p_since)),
    'onsale_pass_use', (SELECT coalesce(jsonb_agg(t), '[]') FROM onsale_pass_use t
                        WHERE onsale_id IN (SELECT id FROM onsales)))
$$;

-- Deletes a theatre's booking rows here (its show ids); returns how many. The source
-- forgets a theatre that moved away with it; the target, rows of an ownership long
-- gone (never the theatre's current ones: it does not own it when it imports).
CREATE OR REPLACE FUNCTION bc_forget_theatre(p_shows bigint[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_bookings text[] := ARRAY(SELECT id FROM booking WHERE show_id = ANY (p_shows));
    v_onsales text[] := ARRAY(SELECT DISTINCT onsale_id FROM onsale_show
                              WHERE show_id = ANY (p_shows));
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
    DELETE FROM checkin_scan WHERE show_id = ANY (p_shows);
    GET DIAGNOSTICS v_n = ROW_COUNT; v_total := v_total + v_n;
    DELETE FROM checkin_theatre
    WHERE theatre_id IN (SELECT sc.theatre_id FROM show s JOIN screen sc ON sc.id = s.screen_id
                         WHERE s.id = ANY (p_shows));
    GET DIAGNOSTICS v_n = ROW_COUNT; v_total := v_total + v_n;
    DELETE FROM outbox
    WHERE substring(payload->>'booking_id' from '^b([0-9]+)-')::bigint = ANY (p_shows);
    GET DIAGNOSTICS v_n = ROW_COUNT; v_total := v_total + v_n;
    DELETE FROM onsale_pass_use WHERE onsale_id = ANY (v_onsales);
    GET DIAGNOSTICS v_n = ROW_COUNT; v_total := v_total + v_n;
    DELETE FROM onsale_admit WHERE onsale_id = ANY (v_onsales);
    GET DIAGNOSTICS v_n = ROW_COUNT; v_total := v_total + v_n;
    DELETE FROM onsale_join WHERE onsale_id = ANY (v_onsales);
    GET DIAGNOSTICS v_n = ROW_COUNT; v_total := v_total + v_n;
    DELETE FROM onsale_show WHERE onsale_id = ANY (v_onsales);
    GET DIAGNOSTICS v_n = ROW_COUNT; v_total := v_total + v_n;
    DELETE FROM onsale WHERE id = ANY (v_onsales);
    GET DIAGNOSTICS v_n = ROW_COUNT; v_total := v_total + v_n;
    RETURN v_total;
END $$;

-- Rows of a table as bc_export_theatre wrote them, inserted or, where their primary key
-- exists, replacing the row (a catch-up after the first copy).
CREATE OR REPLACE FUNCTION bc_upsert_rows(p_table regclass, p_rows jsonb) RETURNS void
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
CREATE OR REPLACE FUNCTION bc_import_theatre(p_theatre text, p_shows bigint[], p_rows jsonb,
                                  p_owner_epoch integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- The on-sale rows carried are not this region's to fence yet (onsale_fence.sql).
    PERFORM set_config('bookcluster.importing', 'on', true);
    PERFORM bc_upsert_rows('show_seat', p_rows->'show_seat');
    PERFORM bc_upsert_rows('booking', p_rows->'booking');
    PERFORM bc_upsert_rows('booking_seat', p_rows->'booking_seat');
    PERFORM bc_upsert_rows('payment', p_rows->'payment');
    PERFORM bc_upsert_rows('payment_event', p_rows->'payment_event');
    PERFORM bc_upsert_rows('ticket', p_rows->'ticket');
    PERFORM bc_upsert_rows('notification', p_rows->'notification');
    PERFORM bc_upsert_rows('idempotency', p_rows->'idempotency');
    PERFORM bc_upsert_rows('checkin_theatre', p_rows->'checkin_theatre');
    -- Scans get ids here, in the source's order (a booking's newest scan decides who is
    -- inside); one caught up twice is the same (booking, nonce) and is skipped.
    INSERT INTO checkin_scan (booking_id, show_id, nonce, gate, scanner, direction,
                              scanned_at, recorded_at, offline, outcome)
    SELECT r.booking_id, r.show_id, r.nonce, r.gate, r.scanner, r.direction, r.scanned_at,
           r.recorded_at, r.offline, r.outcome
    FROM jsonb_populate_recordset(NULL::checkin_scan, p_rows->'checkin_scan') r
    ORDER BY r.id
    ON CONFLICT (booking_id, nonce) DO NOTHING;
    UPDATE checkin_scan c SET prior_scan = p.id
    FROM jsonb_to_recordset(p_rows->'checkin_scan') AS r(booking_id text, nonce text,
                                                         prior_nonce text)
    JOIN checkin_scan p ON p.booking_id = r.booking_id AND p.nonce = r.prior_nonce
    WHERE c.booking_id = r.booking_id AND c.nonce = r.nonce AND c.prior_scan IS NULL;
    -- Pending jobs: the latest export's, in place of an earlier one's (new ids here).
    -- Due at once here; a dead letter stays one; a run the source had started counts.
    DELETE FROM outbox
    WHERE substring(payload->>'booking_id' from '^b([0-9]+)-')::bigint = ANY (p_shows);
    INSERT INTO outbox (kind, payload, created_at, attempts, max_attempts, backoff_ms,
                        failed_at, last_error)
    SELECT kind, payload, created_at,
           CASE WHEN failed_at IS NULL THEN least(coalesce(attempts, 0),
                                                  coalesce(max_attempts, 6) - 1)
                ELSE coalesce(attempts, 0) END,
           coalesce(max_attempts, 6), coalesce(backoff_ms, 500), failed_at, last_error
    FROM jsonb_populate_recordset(NULL::outbox, p_rows->'outbox');
    PERFORM bc_upsert_rows('onsale', p_rows->'onsale');
    PERFORM bc_upsert_rows('onsale_show', p_rows->'onsale_show');
    PERFORM bc_upsert_rows('onsale_join', p_rows->'onsale_join');
    PERFORM bc_upsert_rows('onsale_admit', p_rows->'onsale_admit');
    DELETE FROM onsale_pass_use
    WHERE onsale_id IN (SELECT o->>'id' FROM jsonb_array_elements(p_rows->'onsale') o);
    INSERT INTO onsale_pass_use
    SELECT * FROM jsonb_populate_recordset(NULL::onsale_pass_use, p_rows->'onsale_pass_use');
    PERFORM set_config('bookcluster.importing', 'off', true);
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
