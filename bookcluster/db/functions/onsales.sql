-- The on-sale queue's transitions (bookcluster/booking/onsales.py, admitter.py).

-- Draws the on-sale's seed once, when its sale starts: the joins so far (seq below
-- n_early) get shuffled places, later ones queue in arrival order. The caller holds
-- the on-sale's row lock. Returns whether it sealed now.
CREATE OR REPLACE FUNCTION bc_onsale_seal(p_onsale text)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE onsale SET seed = floor(random() * 4503599627370496)::bigint
                             # (floor(random() * 2147483648)::bigint << 20),
           n_early = next_seq, sealed_at = now()
    WHERE id = p_onsale AND seed IS NULL AND sale_at <= now();
    RETURN FOUND;
END $$;

-- A user's place in the queue: the sequence number of their join (the same on every
-- call), given under the on-sale's row lock, so the order is total and recorded.
-- A join after sale_at seals the on-sale first (if the admitter has not yet), so no
-- join made after the seed was drawn is counted among the shuffled ones.
-- state: 'joined' | 'again' (joined before) | 'not_open' | 'not_found'.
CREATE OR REPLACE FUNCTION bc_onsale_join(p_onsale text, p_user text)
RETURNS TABLE (seq bigint, state text) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_seq bigint;
    v_opens timestamptz;
BEGIN
    SELECT j.seq INTO v_seq FROM onsale_join j WHERE j.onsale_id = p_onsale AND j.user_id = p_user;
    IF FOUND THEN
        RETURN QUERY SELECT v_seq, 'again'::text; RETURN;
    END IF;
    SELECT o.opens_at INTO v_opens FROM onsale o WHERE o.id = p_onsale FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT NULL::bigint, 'not_found'::text; RETURN;
    END IF;
    IF now() < v_opens THEN
        RETURN QUERY SELECT NULL::bigint, 'not_open'::text; RETURN;
    END IF;
    -- A join of the same user that waited for the row lock may have made it meanwhile.
    SELECT j.seq INTO v_seq FROM onsale_join j WHERE j.onsale_id = p_onsale AND j.user_id = p_user;
    IF FOUND THEN
        RETURN QUERY SELECT v_seq, 'again'::text; RETURN;
    END IF;
    PERFORM bc_onsale_seal(p_onsale);
    UPDATE onsale o SET next_seq = o.next_seq + 1 WHERE o.id = p_onsale
        RETURNING o.next_seq - 1 INTO v_seq;
    INSERT INTO onsale_join (onsale_id, seq, user_id) VALUES (p_onsale, v_seq, p_user);
    RETURN QUERY SELECT v_seq, 'joined'::text;
END $$;

-- The joins of several users at once (one node's joins of one loop turn: one call, one
-- commit, one take of the row lock), each answered as bc_onsale_join would: in the
-- order of p_users, users new to the queue get consecutive sequence numbers in that
-- order ('joined'); a user who joined before, or who is named twice, keeps one
-- number ('again' for every mention but a new user's first).
CREATE OR REPLACE FUNCTION bc_onsale_join_many(p_onsale text, p_users text[])
RETURNS TABLE (user_id text, seq bigint, state text) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_opens timestamptz;
    v_next bigint;
    v_new bigint;
BEGIN
    SELECT o.opens_at INTO v_opens FROM onsale o WHERE o.id = p_onsale FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT a.u, NULL::bigint, 'not_found'::text
                     FROM unnest(p_users) WITH ORDINALITY AS a(u, i) ORDER BY a.i;
        RETURN;
    END IF;
    IF now() < v_opens THEN
        RETURN QUERY SELECT a.u, NULL::bigint, 'not_open'::text
                     FROM unnest(p_users) WITH ORDINALITY AS a(u, i) ORDER BY a.i;
        RETURN;
    END IF;
    PERFORM bc_onsale_seal(p_onsale);
    SELECT o.next_seq INTO v_next FROM onsale o WHERE o.id = p_onsale;
    INSERT INTO onsale_join (onsale_id, seq, user_id)
    SELECT p_onsale, v_next + row_number() OVER (ORDER BY f.i) - 1, f.u
    -- Scalar subqueries, one index probe per user: as a join the planner may hash
    -- the whole queue on every call.
    FROM (SELECT a.u, min(a.i) AS i FROM unnest(p_users) WITH ORDINALITY AS a(u, i)
          WHERE (SELECT j.seq FROM onsale_join j
                 WHERE j.onsale_id = p_onsale AND j.user_id = a.u) IS NULL
          GROUP BY a.u) f;
    GET DIAGNOSTICS v_new = ROW_COUNT;
    UPDATE onsale o SET next_seq = o.next_seq + v_new WHERE o.id = p_onsale;
    RETURN QUERY
        SELECT x.u, x.seq,
               CASE WHEN x.seq >= v_next
                         AND row_number() OVER (PARTITION BY x.u ORDER BY x.i) = 1
                    THEN 'joined' ELSE 'again' END::text
        FROM (SELECT a.u, a.i, (SELECT j.seq FROM onsale_join j
                                WHERE j.onsale_id = p_onsale AND j.user_id = a.u) AS seq
              FROM unnest(p_users) WITH ORDINALITY AS a(u, i)) x
        ORDER BY x.i;
END $$;

-- Claims the user's admission pass for a hold. Returns the booking that holds the
-- claim: p_booking if the pass was free or already claimed by this same booking (a
-- retry with the same Idempotency-Key), another booking's id if it was used. A claim
-- whose hold never reached PostgreSQL (its node died between the claim and the hold,
-- or the hold was refused and the pass not given back) is free again after
-- p_stale_s, longer than any write's deadline: no claim outlives a hold that exists.
CREATE OR REPLACE FUNCTION bc_onsale_use_pass(p_onsale text, p_user text, p_booking text,
                                              p_stale_s double precision DEFAULT 60)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_holder text;
BEGIN
    INSERT INTO onsale_pass_use AS u (onsale_id, user_id, booking_id)
    VALUES (p_onsale, p_user, p_booking)
    ON CONFLICT (onsale_id, user_id) DO UPDATE SET booking_id = EXCLUDED.booking_id,
                                                   used_at = now()
        WHERE u.booking_id <> EXCLUDED.booking_id
          AND u.used_at < now() - make_interval(secs => p_stale_s)
          AND NOT EXISTS (SELECT 1 FROM booking b WHERE b.id = u.booking_id)
    RETURNING u.booking_id INTO v_holder;
    IF v_holder IS NULL THEN  -- a live claim (maybe this booking's own): it stays
        SELECT u.booking_id INTO v_holder FROM onsale_pass_use u
        WHERE u.onsale_id = p_onsale AND u.user_id = p_user;
    END IF;
    RETURN v_holder;
END $$;

-- Gives a pass claimed by a hold that was refused back (its hold never existed).
CREATE OR REPLACE FUNCTION bc_onsale_unuse_pass(p_onsale text, p_user text, p_booking text)
RETURNS void LANGUAGE sql AS $$
    DELETE FROM onsale_pass_use WHERE onsale_id = p_onsale AND user_id = p_user
        AND booking_id = p_booking
$$;

-- What the admitter needs for one on-sale, under its row lock (the caller's
-- transaction): its seat counts and shoppers admitted within the shopping window
-- whose pass is not done (unused, or used by a hold still INITIATED).
CREATE OR REPLACE FUNCTION bc_onsale_headroom(p_onsale text)
RETURNS TABLE (available bigint, locked bigint, active bigint) LANGUAGE sql AS $$
    SELECT
      (SELECT count(*) FROM show_seat ss, onsale o WHERE o.id = p_onsale
         AND ss.show_id = ANY (o.show_ids) AND ss.status = 'AVAILABLE'),
      (SELECT count(*) FROM show_seat ss, onsale o WHERE o.id = p_onsale
         AND ss.show_id = ANY (o.show_ids) AND ss.status = 'LOCKED'),
      (SELECT greatest(0, coalesce((SELECT o.frontier - coalesce(
              (SELECT max(a.frontier) FROM onsale_admit a WHERE a.onsale_id = p_onsale
                 AND a.at <= now() - make_interval(secs => o.window_s)), 0)
            FROM onsale o WHERE o.id = p_onsale), 0)
          - (SELECT count(*) FROM onsale_pass_use u JOIN booking b ON b.id = u.booking_id
             JOIN onsale o ON o.id = u.onsale_id
             WHERE u.onsale_id = p_onsale AND b.status <> 'INITIATED'
               AND u.used_at > now() - make_interval(secs => o.window_s))))
$$;
