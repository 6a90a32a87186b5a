#!/usr/bin/env python3
"""What the Redis seat mirror (`bookcluster/seats/mirror.py`, `reconciler.py`) costs per confirm.

    .venv/bin/python loadtests/mirror_cost.py [--confirms 300] [--idle 10] [--fast]

Starts its own cluster (3 regions on free loopback ports, as `bench.py` does;
durable unless --fast) and measures one home region, north:

- the request path: PostgreSQL round trips the mirror adds to a confirm (read
  off the code: `bc_sell` inserts the `mirror_change` rows inside the sale's one
  statement, so none) and Redis calls (`apply_now`: one EVALSHA after commit),
  checked against what the run did: mirror rows per confirm, EVALSHAs on the
  home master per confirm;
- the worker's share: north's worker is stopped and its MirrorApplier and
  Reconciler loops (the same classes) run here in a thread of their own, whose
  CPU time and PostgreSQL queries (asyncpg query logger) and seat scripts are
  counted: per idle second, and per confirm while `--confirms` confirms run;
- node CPU per confirm (north's nodes, net of their idle CPU), and the CPU of
  one `apply_now` call on the client side (a repeat of an applied change: the
  same client work, timed on the mirror thread's uvloop).

Holds and captured payments (gateway simulator, no webhook: the confirm makes
the sale) are made before the measured phase. Every loop is bounded by count
and by --max-seconds. Prints the figures (`--json`: one JSON object); writes
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aiohttp
import asyncpg
import uvloop
from benchlib.cpu import cpu_seconds
from benchlib.local import BenchCluster, bench_cluster
from benchlib.tokens import bearer, token_for

from bookcluster.loops import Loops
from bookcluster.ops.demo_catalog import CatalogSpec
from bookcluster.seats import mirror
from bookcluster.seats.home import HomeRegion
from bookcluster.seats.mirror import MirrorApplier
from bookcluster.seats.reconcile import Reconciler
from bookcluster.stores.connections import Connections, make_redis, pg_dsn, pg_login

REGION = "north"
CATALOG = CatalogSpec(theatres_per_city=1, cities_per_region=1, days=1, shows_per_day=2)
SETTLE_S = 2.0  # after the confirms: the applier marks the last rows
APPLY_CALLS = 2000  # client-side cost of apply_now, timed on repeats
T = TypeVar("T")


class CountingHome(HomeRegion):
    """HomeRegion that counts the PostgreSQL queries and seat scripts it runs."""

    def __init__(self, connections: Connections) -> None:
        super().__init__(connections)
        self.queries = 0
        self.scripts = 0

    def _logged(self, _: Any) -> None:
        self.queries += 1

    @asynccontextmanager
    async def connection(self, region: str) -> AsyncIterator[asyncpg.Connection]:
        async with super().connection(region) as conn:
            conn.add_query_logger(self._logged)
            try:
                yield conn
            finally:
                conn.remove_query_logger(self._logged)

    async def script(self, region: str, name: str, show_id: int, args: list[Any]) -> Any:
        self.scripts += 1
        return await super().script(region, name, show_id, args)


class MirrorLoops(threading.Thread):
    """The region worker's mirror loops (applier, reconciler) in a thread of their own,
    so their CPU time is this thread's (`pthread_getcpuclockid`)."""

    def __init__(self, cluster: BenchCluster, region: str) -> None:
        super().__init__(name="mirror-loops", daemon=True)
        self.cluster, self.region = cluster, region
        self.ready = threading.Event()
        self.failed: BaseException | None = None
        self.home: CountingHome | None = None
        self.applier: MirrorApplier | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    def run(self) -> None:
        try:
            uvloop.run(self._main())
        except BaseException as exc:  # reported by the main thread
            self.failed = exc
            self.ready.set()

    async def _main(self) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        async with Connections(self.cluster.topology, self.region) as connections:
            self.home = CountingHome(connections)
            self.applier = MirrorApplier(self.home, self.region)
            reconciler = Reconciler(connections, self.home, self.region)
            await reconciler.run_once()
            async with Loops(self.region) as loops:  # the worker's supervised loops
                loops.start(self.applier.loop())
                loops.start(reconciler.loop())  # as in the worker: a pass now, then each interval
                self.ready.set()
                await self._stopping.wait()

    def cpu_s(self) -> float:
        assert self.ident is not None
        return time.clock_gettime(time.pthread_getcpuclockid(self.ident))

    def counts(self) -> tuple[float, int, int]:
        assert self.home is not None
        return self.cpu_s(), self.home.queries, self.home.scripts

    def call(self, work: Callable[[HomeRegion], Coroutine[Any, Any, T]]) -> T:
        """Run `work(home)` on this thread's loop and wait for its result."""
        assert self._loop is not None and self.home is not None
        return asyncio.run_coroutine_threadsafe(work(self.home), self._loop).result()

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self.join(timeout=10)


async def evalsha_calls(cluster: BenchCluster) -> int:
    client = make_redis(cluster.topology.region(REGION).redis_master,
                        cluster.topology.secrets)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def node_cpu(cluster: BenchCluster) -> float:
    pids = [c.pid for c in cluster.launcher.supervisor.children
            if c.spec.role == "node" and c.spec.region == REGION]
    return cpu_seconds({"nodes": pids})["nodes"]


async def prepare(cluster: BenchCluster, http: aiohttp.ClientSession, count: int,
                  seats: int, concurrency: int) -> list[tuple[str, str, str]]:
    """`count` holds of `seats` seats by fresh users, each with a payment the gateway
    captured (no webhook). Returns (booking, token, payment id) each."""
    pool = [(show, cluster.seats_of(show)) for show in cluster.shows(REGION)]
    wanted = [(show, free[i:i + seats]) for show, free in pool
              for i in range(0, len(free) - seats + 1, seats)]
    if len(wanted) < count:
        raise SystemExit(f"north's shows have seats for {len(wanted)} confirms of {seats} "
                         f"seats, not {count}")
    nodes = cluster.nodes(REGION)
    payments = cluster.topology.payments
    assert payments is not None
    gateway = f"http://{payments.gateway.host}:{payments.gateway.port}"
    merchant = bearer(cluster.topology.secrets.get("gateway_api_key"))
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int, show: int, chosen: list[str]) -> tuple[str, str, str]:
        token = token_for(cluster.topology, f"mirror-cost-{i}")
        async with gate:
            async with http.post(f"{nodes[i % len(nodes)]}/booking/seats/{show}/lock",
                                 json={"seat_ids": chosen}, headers=bearer(token)) as resp:
                held = await resp.json()
                assert resp.status == 201, held
            async with http.post(f"{gateway}/intents", headers=merchant, json={
                    "booking_id": held["booking_id"], "amount_paise": held["amount_paise"],
                    "region": REGION, "capture_delay_ms": 0, "outcome": "capture",
                    "webhook": False}) as resp:
                intent = await resp.json()
                assert resp.status == 201, intent
            for _ in range(100):
                async with http.get(f"{gateway}/intents/{intent['id']}",
                                    headers=merchant) as resp:
                    if (await resp.json())["status"] == "CAPTURED":
                        return held["booking_id"], token, intent["id"]
                await asyncio.sleep(0.05)
        raise RuntimeError(f"payment {intent['id']} was not captured")

    return list(await asyncio.gather(*(one(i, show, chosen)
                                       for i, (show, chosen) in enumerate(wanted[:count]))))


async def confirm_all(cluster: BenchCluster, http: aiohttp.ClientSession,
                      ready: list[tuple[str, str, str]], concurrency: int) -> None:
    nodes = itertools.cycle(cluster.nodes(REGION))
    todo = iter(ready)

    async def client() -> None:
        for booking, token, payment in todo:
            async with http.post(f"{next(nodes)}/booking/booking/{booking}/confirm",
                                 json={"payment_id": payment},
                                 headers=bearer(token, **{"Idempotency-Key": booking})) as resp:
                body = await resp.json()
                assert resp.status == 200 and body["status"] == "CONFIRMED", body

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def apply_now_cpu_us(home: HomeRegion, booking: str, seats: list[str]) -> float:
    """Client-side CPU of one `apply_now`: the change of an applied sale, run again (the
    script changes nothing then, the client's work is the same). Run it on uvloop, as
    nodes do; the loop's other tasks (the mirror loops) add well under 1 %."""
    show = int(booking[1:].split("-")[0])
    change = {("book", show, booking): seats}
    await mirror.apply_now(home, REGION, change)  # the script is loaded, a connection open
    started = time.thread_time()
    for _ in range(APPLY_CALLS):
        await mirror.apply_now(home, REGION, change)
    return (time.thread_time() - started) / APPLY_CALLS * 1e6


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    async with bench_cluster(spec=CATALOG, nodes=args.nodes, durable=not args.fast,
                             workers=True, wan_delay_ms=0,
                             progress=lambda line: print(f"  {line}")) as cluster:
        cluster.launcher.stop_child(f"{REGION}.worker")  # its mirror loops run here
        loops = MirrorLoops(cluster, REGION)
        loops.start()
        try:
            await asyncio.to_thread(loops.ready.wait, 30)
            if loops.failed is not None:
                raise loops.failed
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                print(f"preparing {args.confirms} held and paid bookings of {args.seats} "
                      "seats in north")
                ready = await prepare(cluster, http, args.confirms, args.seats,
                                      args.concurrency)
                await asyncio.sleep(SETTLE_S)
                print(f"idle for {args.idle:g} s")
                idle0, nodes0 = loops.counts(), node_cpu(cluster)
                redis0, started = await evalsha_calls(cluster), time.monotonic()
                await asyncio.sleep(args.idle)
                idle1, nodes1 = loops.counts(), node_cpu(cluster)
                redis1, idle_s = await evalsha_calls(cluster), time.monotonic() - started
                print(f"{args.confirms} confirms, {args.concurrency} clients")
                rows0 = await mirror_rows(cluster)
                started = time.monotonic()
                await confirm_all(cluster, http, ready, args.concurrency)
                phase_s = time.monotonic() - started
                nodes2 = node_cpu(cluster)
                await asyncio.sleep(SETTLE_S)  # the applier's last batch
                busy1, redis2 = loops.counts(), await evalsha_calls(cluster)
                rows1 = await mirror_rows(cluster)
            booking, seats = ready[0][0], await sold_seats(cluster, ready[0][0])
            apply_us = await asyncio.to_thread(
                loops.call, lambda home: apply_now_cpu_us(home, booking, seats))
        finally:
            loops.stop()
    n, busy_s = args.confirms, phase_s + SETTLE_S
    idle_cpu_per_s = (idle1[0] - idle0[0]) / idle_s
    node_idle_per_s = (nodes1 - nodes0) / idle_s
    return {
        "confirms": n, "seats_per_confirm": args.seats, "confirm_phase_s": round(phase_s, 2),
        "confirms_per_s": round(n / phase_s, 1),
        "request_path_pg_round_trips_added": 0,
        "request_path_redis_calls_added": 1,
        "mirror_rows_per_confirm": round((rows1 - rows0) / n, 2),
        "evalsha_per_confirm_home_master": round((redis2 - redis1) / n, 2),
        # rate limits (user and address buckets, one EVALSHA each) and apply_now
        "evalsha_per_confirm_from_nodes": round((redis2 - redis1 - busy1[2] + idle1[2]) / n, 2),
        "evalsha_per_idle_s_home_master": round((redis1 - redis0) / idle_s, 2),
        "worker_mirror_cpu_ms_per_idle_s": round(idle_cpu_per_s * 1000, 3),
        "worker_mirror_pg_queries_per_idle_s": round((idle1[1] - idle0[1]) / idle_s, 2),
        "worker_mirror_cpu_ms_per_confirm": round(
            (busy1[0] - idle1[0] - idle_cpu_per_s * busy_s) / n * 1000, 3),
        "worker_mirror_cpu_ms_per_confirm_gross": round((busy1[0] - idle1[0]) / n * 1000, 3),
        "worker_mirror_pg_queries_per_confirm": round((busy1[1] - idle1[1]) / n, 3),
        "worker_mirror_scripts_per_confirm": round((busy1[2] - idle1[2]) / n, 3),
        "node_cpu_ms_per_confirm": round(
            (nodes2 - nodes1 - node_idle_per_s * phase_s) / n * 1000, 2),
        "node_idle_cpu_ms_per_s": round(node_idle_per_s * 1000, 2),
        "apply_now_client_cpu_us": round(apply_us, 1),
    }


async def mirror_rows(cluster: BenchCluster) -> int:
    conn = await primary(cluster)
    try:
        return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM mirror_change"))
    finally:
        await conn.close()


async def sold_seats(cluster: BenchCluster, booking: str) -> list[str]:
    conn = await primary(cluster)
    try:
        return [r["seat_id"] for r in await conn.fetch(
            "SELECT seat_id FROM booking_seat WHERE booking_id = $1 AND sold", booking)]
    finally:
        await conn.close()


async def primary(cluster: BenchCluster) -> asyncpg.Connection:
    return await asyncpg.connect(pg_dsn(cluster.topology.region(REGION).pg_primary),
                                 **pg_login(cluster.topology.secrets))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--confirms", type=int, default=300, help="confirms measured (300)")
    p.add_argument("--seats", type=int, default=2, help="seats per booking (2)")
    p.add_argument("--concurrency", type=int, default=16, help="clients at once (16)")
    p.add_argument("--idle", type=float, default=10.0, help="idle seconds measured (10)")
    p.add_argument("--nodes", type=int, default=2, help="app nodes per region (2)")
    p.add_argument("--fast", action="store_true", help="durable: false")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--max-seconds", type=float, default=600.0,
                   help="give up after this long (600)")
    args = p.parse_args(argv)
    if not 1 <= args.confirms <= 2000 or not 1 <= args.seats <= 10 or args.idle <= 0:
        p.error("--confirms 1..2000, --seats 1..10, --idle > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(args.max_seconds):
            return await measure(args)

    result = asyncio.run(bounded())  # not uvloop: the launcher runs initdb as another user
    if args.json:
        print(json.dumps(result))
        return 0
    width = max(map(len, result))
    for name, value in result.items():
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
