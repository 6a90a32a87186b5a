-- Every run of the region's Redis master that the mirror reconciler meets, with the
-- generation it gave it (region_node/reconciler.py): a promotion by Sentinel (another
-- server is master now) or a restart of the same one. The operator page's recent Redis
-- failovers come from here; PostgreSQL's come from Patroni's own history.
CREATE TABLE redis_master_log (
    generation  bigint PRIMARY KEY,
    master      text NOT NULL,         -- host:port as Sentinel names it
    run_id      text NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now()
);
