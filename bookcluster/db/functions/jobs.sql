-- The region's job queue on the outbox (bookcluster/stores/jobqueue.py). A job is an outbox
-- row, written in the transaction of the change that causes it; these functions only
-- record a job's progress. Each commits with synchronous_commit = local (no wait for
-- the synchronous standby): a record a failover loses only makes a job run again
-- (a claim or a retry forgotten) or run once more (its end forgotten), and every
-- handler is idempotent (at least once). The job rows themselves are written with the
-- business transaction's own durability.

-- Marks the jobs `p_done` this worker finished done (a job whose lease another worker
-- took meanwhile is theirs now: left alone), then claims up to `p_limit` due jobs for
-- `p_lease`: the oldest first, skipping rows another worker is claiming right now.
-- A due job past its last attempt (its worker died or froze in it) is dead-lettered
-- instead of run once more. Returns the jobs claimed.
CREATE OR REPLACE FUNCTION bc_jobs_claim(p_worker text, p_done bigint[], p_limit integer,
                                         p_lease interval)
RETURNS TABLE (id bigint, kind text, payload jsonb, attempts integer,
               max_attempts integer, created_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('synchronous_commit', 'local', true);
    IF cardinality(p_done) > 0 THEN
        UPDATE outbox o SET done_at = now(), locked_by = NULL
        WHERE o.id = ANY (p_done) AND o.locked_by = p_worker AND o.done_at IS NULL;
    END IF;
    IF p_limit < 1 THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH due AS (
        SELECT o.id FROM outbox o
        WHERE o.failed_at IS NULL AND o.done_at IS NULL AND o.run_at <= now()
        ORDER BY o.run_at LIMIT p_limit FOR UPDATE SKIP LOCKED
    ), taken AS (
        UPDATE outbox o SET
            locked_by = CASE WHEN o.attempts < o.max_attempts THEN p_worker END,
            attempts = CASE WHEN o.attempts < o.max_attempts THEN o.attempts + 1
                       ELSE o.attempts END,
            run_at = now() + p_lease,
            failed_at = CASE WHEN o.attempts < o.max_attempts THEN NULL ELSE now() END,
            last_error = CASE WHEN o.attempts < o.max_attempts THEN o.last_error
                         ELSE 'its worker stopped during its last attempt' END
        FROM due WHERE o.id = due.id
        RETURNING o.id, o.kind, o.payload, o.attempts, o.max_attempts, o.created_at,
                  o.failed_at
    )
    SELECT t.id, t.kind, t.payload, t.attempts, t.max_attempts, t.created_at
    FROM taken t WHERE t.failed_at IS NULL ORDER BY t.id;
END $$;

-- Extends this worker's leases of `p_ids` to now + `p_lease` (zero: hands them back at
-- once, a worker that stops). Returns the ids still this worker's.
CREATE OR REPLACE FUNCTION bc_jobs_renew(p_worker text, p_ids bigint[], p_lease interval)
RETURNS SETOF bigint LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'local', true);
    RETURN QUERY
    UPDATE outbox SET run_at = now() + p_lease
    WHERE id = ANY (p_ids) AND locked_by = p_worker AND failed_at IS NULL AND done_at IS NULL
    RETURNING id;
END $$;

-- A run of this worker's job failed: the next attempt is due after its backoff (doubled
-- per attempt), or, after its last attempt, the job is dead-lettered. Returns whether
-- it was dead-lettered (NULL: the job is not this worker's any more).
CREATE OR REPLACE FUNCTION bc_job_failed(p_worker text, p_id bigint, p_error text)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_dead boolean;
BEGIN
    PERFORM set_config('synchronous_commit', 'local', true);
    UPDATE outbox SET locked_by = NULL, last_error = left(p_error, 2000),
           failed_at = CASE WHEN attempts >= max_attempts THEN now() END,
           run_at = now() + make_interval(
               secs => backoff_ms * 2 ^ least(greatest(attempts - 1, 0), 20) / 1000.0)
    WHERE id = p_id AND locked_by = p_worker AND failed_at IS NULL AND done_at IS NULL
    RETURNING failed_at IS NOT NULL INTO v_dead;
    RETURN v_dead;
END $$;

-- Puts dead-lettered jobs back in the queue, due now with their attempts anew (all, or
-- those of `p_ids`). Returns how many.
CREATE OR REPLACE FUNCTION bc_jobs_replay(p_ids bigint[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_n integer;
BEGIN
    UPDATE outbox SET failed_at = NULL, attempts = 0, run_at = now(), locked_by = NULL
    WHERE failed_at IS NOT NULL AND (p_ids IS NULL OR id = ANY (p_ids));
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END $$;

-- Deletes jobs done more than `p_keep` ago (they are kept a while to be counted and
-- looked at, as BullMQ kept completed jobs). Returns how many.
CREATE OR REPLACE FUNCTION bc_jobs_prune(p_keep interval)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_n integer;
BEGIN
    PERFORM set_config('synchronous_commit', 'local', true);
    DELETE FROM outbox WHERE done_at < now() - p_keep;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END $$;
