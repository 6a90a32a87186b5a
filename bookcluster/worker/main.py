"""A region's worker process: runs the region's jobs (its outbox), sweeps its holds.

    python -m bookcluster.worker.main --topology topology.yaml --region north

Everything it touches is region-local: the region's PostgreSQL primary (the outbox,
which is the job queue; bookings) and Redis master (the seat mirror), wherever
Patroni and Sentinel put them. Its background loops (jobs, leases, sweeper, mirror
applier, reconciler, watch, topology poll, moves, on-sale admitter, head counts) run
supervised (`bookcluster/loops.py`). It serves /healthz (alive), /readyz (every loop succeeded
lately; 503 naming the stale ones) and /metrics on the region's `worker` address.
SIGTERM: stop taking jobs, let running ones end (leases still renewed), cancel loops,
log one summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from aiohttp import web

from bookcluster import tracing
from bookcluster.booking.admitter import Admitter, AdmitterMetrics
from bookcluster.booking.holds import BookingService
from bookcluster.booking.models import encode_text
from bookcluster.catalog import Catalog
from bookcluster.errors import NodeError
from bookcluster.loops import Loop, Loops
from bookcluster.metrics import NodeMetrics, WorkerMetrics, secret_files, watch_secret_files
from bookcluster.node.auth import OPERATOR, TokenVerifier
from bookcluster.node.body import parse_json
from bookcluster.node.topology_swap import TopologySwap
from bookcluster.node.views.admin import epoch_of
from bookcluster.seats.mirror import MirrorApplier
from bookcluster.seats.reconcile import Reconciler
from bookcluster.stores import jobqueue
from bookcluster.stores.connections import Connections, load_routes
from bookcluster.stores.errors import REDIS_UNAVAILABLE
from bookcluster.stores.jobqueue import Job
from bookcluster.topology import environment
from bookcluster.topology.errors import RegionUnavailable, RouterError
from bookcluster.topology.load import load_topology
from bookcluster.topology.model import Endpoint, Topology, duration_arg
from bookcluster.topology.placement import Placement
from bookcluster.worker import moves
from bookcluster.worker.headcounts import HeadCounts
from bookcluster.worker.jobs import HANDLERS, JobContext
from bookcluster.worker.queue import Consumer
from bookcluster.worker.storewatch import StoreWatch
from bookcluster.worker.sweeper import Sweeper

log = logging.getLogger(__name__)

GAUGE_REFRESH_S = 1.0
MOVE_CHECK_S = 1.0  # how often the worker looks for a move whose driver stopped
CLOSE_GRACE_S = 5.0


def worker_secrets(topology: Topology) -> tuple[str, ...]:
    """What a worker needs from the start (it refuses to start without them)."""
    return ("redis_password", "pg_password", "ticket_secret",
            *(("gateway_api_key",) if topology.payments else ()))


class RegionWorker:
    """Owns the worker's connections, job consumer, sweeper and metrics server."""

    def __init__(self, topology: Topology, region: str,
                 routes: dict[str, Endpoint] | None = None) -> None:
        self.topology = topology
        self.region = region
        self.routes = routes or {}
        self.metrics = WorkerMetrics(region)
        self.jobs_run = 0
        self.moves_taken_over = 0
        self._stack = contextlib.AsyncExitStack()
        self.loops = Loops(region, self.metrics.registry)

    async def __aenter__(self) -> RegionWorker:
        stack = self._stack
        connections = await stack.enter_async_context(
            Connections(self.topology, self.region, self.routes))
        catalog = Catalog(connections, Placement(self.topology))
        await catalog.load()
        self.swap = TopologySwap(connections, catalog)
        await self.swap.adopt()  # a newer epoch the cluster applied than our file's
        bookings = BookingService(connections, catalog, NodeMetrics(self.region))
        stack.push_async_callback(bookings.close)
        http = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)))
        self.context = JobContext(self.topology, self.region, catalog, bookings, http)
        self.home = bookings.home
        self.consumer = Consumer(bookings.home, self.region, self.process)
        self.sweeper = Sweeper(bookings.home, self.region,
                               self.topology.settings.sweep_interval_s)
        self.metrics.relayed.labels(self.region).set_function(
            lambda: self.consumer.claimed_total)
        self.metrics.expired.labels(self.region).set_function(
            lambda: self.sweeper.expired_total)
        self.applier = MirrorApplier(bookings.home, self.region)
        self.admitter = Admitter(connections, self.region, bookings.home,
                                 AdmitterMetrics(self.metrics.registry),
                                 self.topology.settings.onsale_admit_ceiling)
        self.reconciler = Reconciler(connections, bookings.home, self.region)
        self.stores = StoreWatch(connections, self.region, self.metrics)
        watch_secret_files(self.metrics.registry, self.region,
                           secret_files(self.topology, worker_secrets(self.topology)))
        self.heads = HeadCounts(bookings.home, self.region, self.topology.settings,
                                self.metrics.show_heads)
        self._watch_mirror()
        try:  # a new master generation is announced before this worker reports healthy
            await self.reconciler.run_once()
        except (RegionUnavailable, *REDIS_UNAVAILABLE) as exc:
            log.warning("first mirror check of %s skipped: %s", self.region, exc)
        stack.push_async_callback(self.loops.close)  # cancelled before what they use closes
        # First of all: no new jobs, running ones get their grace (leases still renewed).
        stack.push_async_callback(self.consumer.close, CLOSE_GRACE_S)
        for loop in (*self.consumer.loops(), self.sweeper.loop(), self.applier.loop(),
                     self.reconciler.loop(), self._watch_loop(), self._stores_loop(),
                     self.swap.loop(), self._moves_loop(), self.admitter.loop(),
                     self.heads.loop()):
            self.loops.start(loop)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
        log.info("worker %s stopped: %d jobs run, %d jobs claimed, %d holds expired",
                 self.region, self.jobs_run, self.consumer.claimed_total,
                 self.sweeper.expired_total)

    def _watch_mirror(self) -> None:
        region, metrics = self.region, self.metrics
        metrics.mirror_applied.labels(region).set_function(lambda: self.applier.applied_total)
        metrics.mirror_divergent.labels(region).set_function(
            lambda: self.reconciler.divergent_last)
        metrics.mirror_repaired.labels(region).set_function(
            lambda: self.reconciler.repaired_total)
        metrics.mirror_generation.labels(region).set_function(
            lambda: self.reconciler.generation or 0)

    async def process(self, job: Job) -> Any:
        handler = HANDLERS.get(job.kind)
        if handler is None:
            raise ValueError(f"no handler for job kind {job.kind!r}")
        started = time.monotonic()
        labels = (self.region, job.kind)
        data = job.data
        try:
            with tracing.span(f"job {job.kind}", "consumer", {
                    "bookcluster.region": self.region, "bookcluster.job": job.kind,
                    "bookcluster.booking_id": data.get("booking_id"),
                    "bookcluster.show_id": data.get("show_id")}):
                result = await handler(self.context, job.data)
        except Exception as exc:
            last = job.last_attempt
            self.metrics.jobs.labels(*labels, "dead" if last else "retry").inc()
            log.warning("job %s %s failed (attempt %d)%s: %s", job.kind, job.name,
                        job.attempt, ", dead-lettered" if last else "", exc)
            raise
        finally:
            self.metrics.job_seconds.labels(*labels).observe(time.monotonic() - started)
        self.jobs_run += 1
        self.metrics.jobs.labels(*labels, "ok").inc()
        self.metrics.job_latency.labels(*labels).observe(
            max(0.0, time.time() - job.created_at.timestamp()))
        return result

    async def watch_once(self) -> None:
        """Finished jobs pruned; queue gauges: jobs by state, `outbox_pending` every job
        not done yet."""
        async with self.home.connection(self.region) as conn:
            await jobqueue.prune(conn)
            counts = await jobqueue.counts(conn)
        for state, value in counts.items():
            self.metrics.queue_depth.labels(self.region, state).set(value)
        self.metrics.outbox_pending.labels(self.region).set(
            counts["waiting"] + counts["active"] + counts["delayed"])

    def _watch_loop(self) -> Loop:
        """Every second, the first a second in; a failure is one line (the stores are
        down), never the worker's end."""
        return Loop("watch", self.watch_once, GAUGE_REFRESH_S, wait_first=True,
                    expected=(Exception,))

    def _stores_loop(self) -> Loop:
        """Every second: is each of the region's leaders writable, and its copies' lag."""
        return Loop("stores", self.stores.run_once, GAUGE_REFRESH_S, wait_first=True,
                    expected=(Exception,))

    async def drive_moves_once(self) -> int:
        """Finish this region's theatre moves whose driver (a mover that died or hangs)
        stopped renewing its lease. Returns how many it took over."""
        async with self.context.bookings.home.connection(self.region) as conn:
            ids = await moves.lapsed(conn, self.region)
        if ids:
            await moves.drive_unfinished(self.swap.topology, self.region, ids,
                                         moves.driver_name(f"worker.{self.region}"),
                                         lambda line: log.info("move: %s", line))
            self.moves_taken_over += len(ids)
        return len(ids)

    async def _drive_moves(self) -> None:
        await self.drive_moves_once()

    def _moves_loop(self) -> Loop:
        """A move is a journal the region's worker drives to its end: within seconds of
        the stores answering again, never frozen until a person acts. A failure (the
        stores are down, or the move waits) is one line; the next round tries again."""
        return Loop("moves", self._drive_moves, MOVE_CHECK_S, wait_first=True,
                    expected=(Exception,))


def _answer(body: Any, status: int = 200, headers: dict[str, str] | None = None
            ) -> web.Response:
    """JSON like every node's answer (`booking/models.encode`)."""
    return web.json_response(body, status=status, headers=headers, dumps=encode_text)


def status_app(worker: RegionWorker) -> web.Application:
    verifier = TokenVerifier(worker.topology)

    async def healthz(_: web.Request) -> web.Response:
        return _answer({"status": "ok", "region": worker.region,
                                  "jobs_run": worker.jobs_run,
                                  "epoch": worker.swap.topology.epoch})

    async def readyz(_: web.Request) -> web.Response:
        """200 when every loop succeeded within its bound; else 503 naming the stale."""
        loops = worker.loops.report()
        stale = sorted(name for name, loop in loops.items() if loop["stale"])
        body = {"status": "stale" if stale else "ready", "region": worker.region,
                "stale": stale, "loops": loops}
        return _answer(body, status=503 if stale else 200)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=worker.metrics.render(), content_type="text/plain")

    async def adopt_topology(request: web.Request) -> web.Response:
        """As a node's `POST /ops/topology`: route jobs by this epoch (operator only)."""
        try:
            verifier.identity(request.headers.get("Authorization")).require(OPERATOR)
            topology = await worker.swap.adopt(epoch_of(parse_json(await request.read())))
        except NodeError as exc:
            return _answer(exc.body(), status=exc.status, headers=exc.headers)
        return _answer({"node": f"{worker.region}.worker", "region": worker.region,
                                  "epoch": topology.epoch})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/ops/topology", adopt_topology)
    return app


async def serve(topology: Topology, region: str, host: str, port: int,
                routes: dict[str, Endpoint]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with RegionWorker(topology, region, routes) as worker:
        runner = web.AppRunner(status_app(worker), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        log.info("worker %s ready on %s:%d", region, host, port)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m bookcluster.worker.main")
    p.add_argument("--topology", type=Path, default=Path("topology.yaml"))
    p.add_argument("--region", required=True)
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--run-dir", type=Path)
    p.add_argument("--sweep-interval", type=duration_arg,
                   help="override settings.sweep_interval, e.g. 1s")
    p.add_argument("--wan-routes", type=Path, help="routes through the WAN proxy (launcher)")
    args = p.parse_args(argv)
    try:
        topology = load_topology(args.topology, run_dir=args.run_dir)
        topology.secrets.require(*worker_secrets(topology))
    except RouterError as exc:  # a bad topology or a missing secret
        raise SystemExit(f"error: {exc}") from None
    if args.region not in topology.regions:
        p.error(f"--region {args.region!r} is not in {topology.path}")
    if args.sweep_interval:
        topology = topology.with_settings(sweep_interval_s=args.sweep_interval)
    endpoint = topology.region(args.region).worker
    host = args.host or (endpoint.host if endpoint else "127.0.0.1")
    port = args.port or (endpoint.port if endpoint else 0)
    routes = load_routes(args.wan_routes) if args.wan_routes else {}
    tracing.configure("bookcluster-worker", args.region, environment.otel_endpoint())
    uvloop.run(serve(topology, args.region, host, port, routes))


if __name__ == "__main__":
    main()
