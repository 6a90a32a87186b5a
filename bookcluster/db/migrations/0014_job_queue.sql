-- The region's job queue is the outbox itself (bookcluster/stores/jobqueue.py): workers
-- claim due rows with FOR UPDATE SKIP LOCKED, a claim is a lease (`run_at` pushed to
-- its end, renewed while the job runs), a failure schedules the next attempt
-- (`run_at` backed off) or dead-letters the row (`failed_at`), and a job that ran is
-- marked done (`done_at`) and deleted a little later (the workers prune). Before, a
-- relay copied rows into BullMQ on the Redis master (`relayed_at`) and rows were
-- never deleted.
ALTER TABLE outbox
    ADD COLUMN run_at       timestamptz NOT NULL DEFAULT now(),  -- due; a claim's lease end
    ADD COLUMN attempts     integer NOT NULL DEFAULT 0,          -- runs started
    ADD COLUMN max_attempts integer NOT NULL DEFAULT 6,
    ADD COLUMN backoff_ms   integer NOT NULL DEFAULT 500,        -- doubled per attempt
    ADD COLUMN locked_by    text,                                -- the claiming worker
    ADD COLUMN failed_at    timestamptz,                         -- dead-lettered
    ADD COLUMN done_at      timestamptz,                         -- ran; pruned later
    ADD COLUMN last_error   text;

-- Rows a relay handed to BullMQ ran there, or may still run there: the recent ones run
-- again here (at least once: every handler is idempotent), older ones are done or in
-- BullMQ's dead-letter list (`bookcluster jobs failed` before upgrading lists them).
DELETE FROM outbox WHERE relayed_at < now() - interval '10 minutes';
ALTER TABLE outbox DROP COLUMN relayed_at;  -- also drops the index outbox_pending

-- What a claim reads: due rows of the live queue, oldest first.
CREATE INDEX outbox_due ON outbox (run_at) WHERE failed_at IS NULL AND done_at IS NULL;
-- A worker claims, renews and deletes every few milliseconds under load: vacuum early.
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0.0,
                        autovacuum_vacuum_threshold = 1000,
                        autovacuum_vacuum_insert_scale_factor = 0.0,
                        autovacuum_vacuum_insert_threshold = 1000);
