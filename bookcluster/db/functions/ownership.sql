-- Theatre ownership, fenced by the topology epoch (bookcluster/stores/ownership.py;
-- the table theatre_owner is in migration 0009). Every write runs `bc_own` first, in
-- its own transaction: it takes the theatre's shared advisory lock and then (a fresh
-- snapshot: plpgsql takes one per statement) reads the row. A move's freeze takes the
-- same lock exclusively, so it waits for every write in flight and every later write
-- sees FROZEN.

-- The advisory-lock key of a theatre.
CREATE OR REPLACE FUNCTION bc_theatre_lock(p_theatre text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT hashtextextended('bc_theatre:' || p_theatre, 0) $$;

-- The fence of every write: this region owns the show's theatre, not frozen, since an
-- epoch no newer than the caller's (p_epoch NULL: any). Raises, having changed nothing:
--   'bc_moved'           DETAIL '<owner> <epoch>' (owner empty: this region, the
--                        caller's map is older than its ownership; '' 0: unknown);
--   'bc_theatre_moving'  DETAIL the move's target.
-- The shared lock is held to the end of the caller's transaction.
CREATE OR REPLACE FUNCTION bc_own(p_show bigint, p_epoch integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_theatre text;
BEGIN
    SELECT sc.theatre_id INTO v_theatre FROM show sh JOIN screen sc ON sc.id = sh.screen_id
    WHERE sh.id = p_show;
    IF v_theatre IS NULL THEN
        RAISE EXCEPTION 'bc_moved' USING ERRCODE = 'P0001', DETAIL = ' 0';
    END IF;
    PERFORM bc_own_theatre(v_theatre, p_epoch);
END $$;

-- bc_own for a theatre: its shared lock, then its record (the same refusals).
CREATE OR REPLACE FUNCTION bc_own_theatre(p_theatre text, p_epoch integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_owner theatre_owner%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(bc_theatre_lock(p_theatre));
    SELECT * INTO v_owner FROM theatre_owner WHERE theatre_id = p_theatre;
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
CREATE OR REPLACE FUNCTION bc_writable(p_theatres text[]) RETURNS text[]
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
