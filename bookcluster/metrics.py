"""Prometheus metrics of a node, in a registry the app owns."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from bookcluster.stores.connections import Connections
    from bookcluster.topology.model import Topology

DELAY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class NodeMetrics:
    def __init__(self, region: str) -> None:
        self.region = region
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bookcluster_http_requests", "HTTP requests by route, method and status",
            ["region", "route", "method", "status"], registry=self.registry)
        self.latency = Histogram(
            "bookcluster_http_request_seconds", "HTTP request latency by route",
            ["region", "route", "method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.holds = Counter(
            "bookcluster_holds", "Hold attempts by home region and outcome (held, conflict, "
            "refused_early, unavailable, failed; best available: no_block)",
            ["region", "home", "outcome"], registry=self.registry)
        self.confirms = Counter(
            "bookcluster_confirms", "Confirm attempts by home region and outcome",
            ["region", "home", "outcome"], registry=self.registry)
        self.checkin_scans = Counter(
            "bookcluster_checkin_scans", "Scans at the door decided by this home node, by "
            "outcome (admitted, exited, entered_twice, and each refusal)",
            ["region", "home", "outcome"], registry=self.registry)
        self.refunds = Counter(
            "bookcluster_refunds", "Refunds of confirmed bookings decided by this home node, "
            "by outcome (refunded, replay, and each refusal)",
            ["region", "home", "outcome"], registry=self.registry)
        self.writes_waiting = Gauge(
            "bookcluster_writes_waiting", "Writes waiting for admission on this node",
            registry=self.registry)
        self.writes_shed = Counter(
            "bookcluster_writes_shed", "Writes refused 503 overloaded by admission, by why "
            "(queue_full, deadline)", ["region", "reason"], registry=self.registry)
        self.early_refusal_reads = Counter(
            "bookcluster_early_refusal_reads", "Home-master reads of a show's seats to refuse "
            "holds early (shared by concurrent holds)", ["region", "home"],
            registry=self.registry)
        self.limit_refusals = Counter(
            "bookcluster_limit_refusals", "Requests refused by an abuse limit (429 or 409)",
            ["region", "limit"], registry=self.registry)

        self.cache_entries = Gauge(
            "bookcluster_seat_cache_entries", "Shows held in the node's seat cache",
            registry=self.registry)
        self.cache_evictions = Counter(
            "bookcluster_seat_cache_evictions", "Shows evicted from the seat cache (LRU cap)",
            registry=self.registry)
        self.cache_lookups = Counter(
            "bookcluster_seat_cache_lookups", "Seat cache lookups by result (hit/miss)",
            ["region", "result"], registry=self.registry)
        self.cache_fills = Counter(
            "bookcluster_seat_cache_fills", "Seat-state reads from Redis to fill the cache",
            ["region", "home"], registry=self.registry)
        self.replica_fallbacks = Counter(
            "bookcluster_replica_fallbacks", "Fills that fell back from the local replica to "
            "the home master", ["region", "home"], registry=self.registry)
        self.change_delay = Histogram(
            "bookcluster_change_delay_seconds", "Delay from a change on a master to its "
            "arrival at a node, per region pair", ["source", "region"], buckets=DELAY_BUCKETS,
            registry=self.registry)
        self.changes = Counter(
            "bookcluster_seat_changes", "Change messages received, by what they did to the cache",
            ["region", "source", "outcome"], registry=self.registry)
        self.subscription_resets = Counter(
            "bookcluster_subscription_resets", "(Re)subscriptions to a region's changes",
            ["region", "source"], registry=self.registry)
        self.listener_malformed = Counter(
            "bookcluster_listener_malformed", "Change messages skipped as malformed, by why "
            "(not_json, not_object, missing, bad_type, out_of_range)",
            ["region", "source", "reason"], registry=self.registry)
        self.listener_restarts = Counter(
            "bookcluster_listener_restarts", "Listener reconnects after a failure, by cause "
            "(connection, silent, error, ended)", ["region", "source", "reason"],
            registry=self.registry)
        self.listener_subscribed = Gauge(
            "bookcluster_listener_subscribed", "1 while the subscription to a region's "
            "changes is up", ["region", "source"], registry=self.registry)
        self.listener_shows = Gauge(
            "bookcluster_listener_shows", "Shows whose change channel this node subscribes "
            "to (cached or with live sockets), by source region", ["region", "source"],
            registry=self.registry)
        self.live_sockets = Gauge(
            "bookcluster_live_sockets", "Open live seat-map WebSockets", registry=self.registry)
        self.queue_sockets = Gauge(
            "bookcluster_queue_sockets", "Open live on-sale queue WebSockets",
            registry=self.registry)
        self.live_failures = Counter(
            "bookcluster_live_failures", "Live-socket work the hub ran by itself that failed, "
            "by what (resync, close) and why (gone: the socket went away; unavailable: the "
            "show's stores could not be read; error: logged)",
            ["region", "what", "why"], registry=self.registry)
        self.pg_pool = Gauge(
            "bookcluster_pg_pool_connections", "Connections of this node's pool to a region's "
            "PostgreSQL primary, by state (in_use, idle)", ["region", "home", "state"],
            registry=self.registry)

    def watch_pools(self, connections: Connections) -> None:
        """Export pool usage, read when scraped (no polling task)."""
        for home in connections.topology.regions:
            pool = connections.pg_primary(home)
            self.pg_pool.labels(self.region, home, "in_use").set_function(_in_use(pool))
            self.pg_pool.labels(self.region, home, "idle").set_function(pool.get_idle_size)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(self.region, route, method, str(status)).inc()
        self.latency.labels(self.region, route, method).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def secret_files(topology: Topology, names: Iterable[str]) -> dict[str, Path]:
    """The files this process's secrets (and the identity provider's key) are read from:
    a secret its variable holds has none."""
    files = {name: path for name in names
             if (path := topology.secrets.source_file(name)) is not None}
    for name, path in (("auth.secret_file", topology.auth.secret_file),
                       ("auth.public_key_file", topology.auth.public_key_file)):
        if path is not None:
            files[name] = path
    return files


def watch_secret_files(registry: CollectorRegistry, region: str,
                       files: dict[str, Path]) -> Gauge:
    """`bookcluster_secret_file_present`, read when scraped: 0 once a file went missing."""
    gauge = Gauge(
        "bookcluster_secret_file_present", "1 while a secret or key file this process read "
        "at start-up is still there; 0: it went missing, and the process would refuse to "
        "start again", ["region", "name"], registry=registry)
    for name, path in files.items():
        gauge.labels(region, name).set_function(_exists(path))
    return gauge


def _exists(path: Path) -> Callable[[], float]:
    return lambda: float(path.is_file())


def _in_use(pool: asyncpg.Pool) -> Callable[[], float]:
    return lambda: float(pool.get_size() - pool.get_idle_size())


class WorkerMetrics:
    """Metrics of a region's worker: jobs, queue depth, outbox backlog."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.registry = CollectorRegistry()
        self.jobs = Counter(
            "bookcluster_jobs", "Jobs run, by kind and outcome (ok, retry, dead)",
            ["region", "kind", "outcome"], registry=self.registry)
        self.job_seconds = Histogram(
            "bookcluster_job_seconds", "Time a job's handler ran", ["region", "kind"],
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.job_latency = Histogram(
            "bookcluster_job_latency_seconds", "From enqueue to the end of a job's last run",
            ["region", "kind"], buckets=LATENCY_BUCKETS + (10.0, 30.0, 60.0),
            registry=self.registry)
        self.queue_depth = Gauge(
            "bookcluster_queue_depth", "Jobs in the region's queue by state",
            ["region", "state"], registry=self.registry)
        self.outbox_pending = Gauge(
            "bookcluster_outbox_pending", "Jobs in the outbox not done yet (dead letters aside)",
            ["region"], registry=self.registry)
        self.relayed = Gauge(
            "bookcluster_outbox_relayed", "Jobs this worker claimed from the outbox since start",
            ["region"], registry=self.registry)
        self.expired = Gauge(
            "bookcluster_holds_expired", "Bookings the sweeper expired since start", ["region"],
            registry=self.registry)
        self.mirror_applied = Gauge(
            "bookcluster_mirror_changes_applied", "Committed seat changes the worker applied "
            "to the master since start", ["region"], registry=self.registry)
        self.mirror_divergent = Gauge(
            "bookcluster_mirror_divergent_seats", "Seats whose Redis state differed from "
            "PostgreSQL in the reconciler's last pass", ["region"], registry=self.registry)
        self.mirror_repaired = Gauge(
            "bookcluster_mirror_repaired_seats", "Seats the reconciler repaired since start",
            ["region"], registry=self.registry)
        self.show_heads = Gauge(
            "bookcluster_show_heads", "Per show of this region whose check-in window is "
            "open: seats sold, admitted at the door (ever) and inside now",
            ["region", "show", "count"], registry=self.registry)
        self.mirror_generation = Gauge(
            "bookcluster_mirror_generation", "Generation of the region's Redis master",
            ["region"], registry=self.registry)
        self.store_reachable = Gauge(
            "bookcluster_store_reachable", "1 when the region's Redis master (store=redis) or "
            "PostgreSQL primary (store=postgres) answered the worker's last look as the "
            "writable leader; 0 while none does (a failover, or the store is down)",
            ["region", "store"], registry=self.registry)
        self.redis_replica_lag = Gauge(
            "bookcluster_redis_replica_lag_bytes", "Bytes of the region's Redis master's "
            "replication stream a replica (in any region) has not acknowledged",
            ["region", "replica"], registry=self.registry)
        self.pg_standby_lag = Gauge(
            "bookcluster_pg_standby_lag_bytes", "WAL bytes the region's PostgreSQL standby "
            "has not replayed yet", ["region", "standby"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
