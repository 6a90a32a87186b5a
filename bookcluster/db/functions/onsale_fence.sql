-- The on-sale's writes are fenced like a hold (bookcluster/booking/onsales.py; a theatre
-- move carries an on-sale's rows with its theatre: bc_export_theatre). A join, a pass's
-- claim and an admission step go on only where every theatre of the on-sale's shows is
-- OWNED, each under its shared lock (bc_own_theatre), so a move's freeze waits for those
-- in flight and every later one is refused: 503 theatre_moving while frozen, MOVED
-- after. The joins and claims are fenced by triggers, so every path that writes them
-- (one join, a batch of joins, a claim) is, without a call of its own.

-- Raises as bc_own (any epoch) unless this region may write the on-sale's theatres now.
CREATE OR REPLACE FUNCTION bc_onsale_own(p_onsale text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_theatre text;
BEGIN
    FOR v_theatre IN
        SELECT DISTINCT sc.theatre_id FROM onsale o, show sh, screen sc
        WHERE o.id = p_onsale AND sh.id = ANY (o.show_ids) AND sc.id = sh.screen_id
        ORDER BY 1
    LOOP
        PERFORM bc_own_theatre(v_theatre, NULL);
    END LOOP;
END $$;

-- Whether this region may write the on-sale now (every theatre OWNED), each theatre's
-- shared lock taken to the end of the transaction; a theatre whose lock a freeze holds
-- counts as not writable, not waited for: for the admitter.
CREATE OR REPLACE FUNCTION bc_onsale_writable(p_onsale text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_theatres text[] := ARRAY(
        SELECT DISTINCT sc.theatre_id FROM onsale o, show sh, screen sc
        WHERE o.id = p_onsale AND sh.id = ANY (o.show_ids) AND sc.id = sh.screen_id);
BEGIN
    RETURN cardinality(v_theatres) > 0
       AND cardinality(bc_writable(v_theatres)) = cardinality(v_theatres);
END $$;

-- A move's import (bc_import_theatre) writes the rows it carries into a region that does
-- not own the theatre yet: it says so for its own transaction, and is not fenced.
CREATE OR REPLACE FUNCTION bc_onsale_importing() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('bookcluster.importing', true), '') = 'on'
$$;

-- After a statement that joined (one join or a batch): fence each on-sale it joined.
CREATE OR REPLACE FUNCTION bc_onsale_fence_joins() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_onsale text;
BEGIN
    IF NOT bc_onsale_importing() THEN
        FOR v_onsale IN SELECT DISTINCT onsale_id FROM joined ORDER BY 1 LOOP
            PERFORM bc_onsale_own(v_onsale);
        END LOOP;
    END IF;
    RETURN NULL;
END $$;

-- Before a pass's claim (inserted, or a stale claim taken over).
CREATE OR REPLACE FUNCTION bc_onsale_fence_claim() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT bc_onsale_importing() THEN
        PERFORM bc_onsale_own(NEW.onsale_id);
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE TRIGGER onsale_join_fenced AFTER INSERT ON onsale_join
    REFERENCING NEW TABLE AS joined FOR EACH STATEMENT
    EXECUTE FUNCTION bc_onsale_fence_joins();

CREATE OR REPLACE TRIGGER onsale_pass_use_fenced BEFORE INSERT OR UPDATE ON onsale_pass_use
    FOR EACH ROW EXECUTE FUNCTION bc_onsale_fence_claim();
