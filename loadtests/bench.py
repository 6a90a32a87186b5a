#!/usr/bin/env python3
"""Benchmark of bookcluster on this machine, in one run, against its own clusters.

    .venv/bin/python loadtests/bench.py [--duration 10] [--wan-delays 0,40]
                                        [--nodes-per-region 5,1] [--no-workers] [--fast] ...

Fresh local clusters (3 regions, durable unless --fast, each region's worker
unless --no-workers, the payment gateway simulator, the default abuse limits)
on free loopback ports: the first --nodes-per-region count at every WAN delay,
then each other count at the first delay. On the first cluster: what verifying
a user token costs, holds of random free seats sent straight to a home-region
node and (separately) to other regions' nodes that forward them, 1,000 clients
on one seat, confirms of payments the gateway captured (direct, then
forwarded), seat-map reads (hot and cold) next to a trivial aiohttp handler.
On each other node count: the same writes and the one seat. On every cluster
of the first count: change-to-remote-cache delay per region pair and local vs
remote latency. On the first cluster also the rush on one 1,000-seat show, twice
side by side: best-available seats vs clients picking from the seat map
(`benchlib/bestrush.py`). Every write carries a token of its own user, and every hold is
by a fresh user, so no per-user cap or rate refuses one. Each write phase
counts the CPU of every process group (nodes, Redis masters, replicas,
PostgreSQL, workers, gateway, load generators, this process) and of the whole
machine, and with workers waits until they finished what it left them, adding
that CPU. Then, with the clusters stopped, the raw limits of the machine
(redis-benchmark on the HOLD script, pgbench on the hold write and the confirm
statement, with the CPU they cost) and the hold's two stages timed from Python,
against password-protected scratch servers from the same binaries. Prints a
table; writes results/bench-<UTC>.json and .png. Every load loop is bounded by
--duration and --max-requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from benchlib import bestrush, log, peer, phases, raw, regions
from benchlib.backlog import Backlog, Settle
from benchlib.chart import draw
from benchlib.cpu import cpu_groups
from benchlib.local import AuxServers, BenchCluster, bench_cluster
from benchlib.payments import Held, pay
from benchlib.phases import Load, SeatPool
from benchlib.report import derive
from benchlib.table import render
from benchlib.tokens import verify_cost

from bookcluster.local.binaries import find_binaries
from bookcluster.ops.demo_catalog import CatalogSpec

HERE = Path(__file__).resolve().parent
# Shows of 1,000 seats (25 rows x 40, the peer's shape): ~216 shows, ~216,000 seats for
# sale, enough for the peer-shape phases (20 s each) and 10 s of each write phase.
SHOW_LAYOUT = (25, 40)
BENCH_CATALOG = CatalogSpec(theatres_per_city=2, cities_per_region=3, days=1, shows_per_day=4,
                            layout=SHOW_LAYOUT)
SMOKE_CATALOG = CatalogSpec(theatres_per_city=1, cities_per_region=1, days=1, shows_per_day=2,
                            layout=SHOW_LAYOUT)
PHASES = ("peer", "writes", "reads", "cross", "token", "best", "raw")
# Raw-limit capacity per second of --duration: generous for this machine's rates.
RAW_HOLDS_PER_S = 8000
RAW_CONFIRMS_PER_S = 4000
TOKEN_CALLS = 5_000  # per round of the token verification micro-benchmark (5 rounds, ~5 s)
# Bookings paid for each confirm phase, per second of --duration: more than this machine
# confirms (pgbench's confirm limit here is ~1,000/s); a phase that runs out says so.
CONFIRMS_PER_S = 1500


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per phase (10)")
    p.add_argument("--max-requests", type=int, default=100_000,
                   help="requests per phase at most (100000)")
    p.add_argument("--wan-delays", default="0,40",
                   help="one-way WAN delays in ms, a fresh cluster each; the first also "
                        "runs the throughput phases (0,40); 0 = direct links, no proxy")
    p.add_argument("--fast", action="store_true",
                   help="durable: false (no fsync / synchronous_commit, no AOF)")
    p.add_argument("--nodes-per-region", default="5,1",
                   help="comma-separated; a cluster each: the first runs every phase, the "
                        "others the writes and the one seat (5,1)")
    p.add_argument("--no-workers", dest="workers", action="store_false",
                   help="no region workers: the jobs a confirm writes just pile up, and "
                        "their CPU is not counted")
    p.add_argument("--load-procs", type=int, default=2, help="load generator processes (2)")
    p.add_argument("--hold-clients", type=int, default=128,
                   help="concurrent clients for holds and confirms (128)")
    p.add_argument("--read-clients", type=int, default=1000,
                   help="concurrent seat-map readers (1000)")
    p.add_argument("--rush-clients", type=int, default=1000,
                   help="clients that all want the same seat (1000)")
    p.add_argument("--wan-clients", type=int, default=6,
                   help="concurrent clients of the local/remote latency phases (6)")
    p.add_argument("--wan-requests", type=int, default=300,
                   help="requests per local/remote latency phase at most (300)")
    p.add_argument("--live-holds", type=int, default=100,
                   help="holds per home region while timing change delay (100)")
    p.add_argument("--redis-bench-requests", type=int, default=200_000)
    p.add_argument("--redis-bench-clients", type=int, default=50)
    p.add_argument("--pgbench-clients", type=int, default=16)
    p.add_argument("--token-calls", type=int, default=TOKEN_CALLS,
                   help=f"token verifications per round of the micro-benchmark ({TOKEN_CALLS})")
    p.add_argument("--settle-timeout", type=float, default=120.0,
                   help="seconds the workers get to finish what a phase left them (120)")
    p.add_argument("--no-raw", action="store_true", help="skip the raw limits")
    p.add_argument("--phases", default=",".join(PHASES),
                   help="comma-separated, of: peer (the peer's load shape), writes (holds, "
                        "confirms, one seat), reads (seat maps), cross (change delay, local vs "
                        "remote), token, best (the rush on one show: best available vs "
                        "picking), raw (store limits); default all")
    p.add_argument("--quick", action="store_true",
                   help="the peer shape and the raw limits only, on one cluster of 5 nodes "
                        "per region, no WAN delay (a few minutes)")
    p.add_argument("--peer-clients", type=int, default=peer.CLIENTS,
                   help=f"clients of the peer-shape phases ({peer.CLIENTS})")
    p.add_argument("--peer-duration", type=float, default=peer.DURATION_S,
                   help=f"seconds of each peer-shape phase ({peer.DURATION_S:g})")
    p.add_argument("--best-clients", type=int, default=bestrush.CLIENTS,
                   help=f"clients of each rush on one show, best available and picking "
                        f"({bestrush.CLIENTS})")
    p.add_argument("--best-duration", type=float, default=bestrush.DURATION_S,
                   help=f"seconds each rush may last at most ({bestrush.DURATION_S:g})")
    p.add_argument("--best-max-requests", type=int, default=bestrush.MAX_REQUESTS,
                   help=f"hold requests of each rush at most ({bestrush.MAX_REQUESTS})")
    p.add_argument("--results", type=Path, default=HERE / "results",
                   help="folder for bench-<UTC>.json and .png (loadtests/results)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny everything (2 and 1 nodes per region, 1 s phases): checks it "
                        "works")
    args = p.parse_args(argv)
    if args.smoke:
        smoke = {"duration": 1.0, "max_requests": 400, "nodes_per_region": "2,1",
                 "load_procs": 1, "hold_clients": 16, "read_clients": 100,
                 "rush_clients": 100, "wan_clients": 3, "wan_requests": 30, "live_holds": 5,
                 "redis_bench_requests": 4000, "redis_bench_clients": 10,
                 "pgbench_clients": 4, "token_calls": 2000, "settle_timeout": 20.0,
                 "peer_clients": 16, "peer_duration": 1.0, "best_clients": 50,
                 "best_duration": 30.0}
        for key, value in smoke.items():
            if getattr(args, key) == p.get_default(key):
                setattr(args, key, value)
    if args.quick:
        for key, value in {"phases": "peer,raw", "nodes_per_region": "5",
                           "wan_delays": "0"}.items():
            if getattr(args, key) == p.get_default(key):
                setattr(args, key, value)
    args.phase_set = {x.strip() for x in args.phases.split(",") if x.strip()}
    if not args.phase_set or args.phase_set - set(PHASES):
        p.error(f"--phases: some of {','.join(PHASES)}, got {args.phases!r}")
    if args.no_raw:
        args.phase_set.discard("raw")
    try:
        args.delays = [int(d) for d in args.wan_delays.split(",") if d.strip()]
    except ValueError:
        p.error(f"--wan-delays: expected comma-separated integers, got {args.wan_delays!r}")
    if not args.delays or any(d < 0 for d in args.delays):
        p.error("--wan-delays: at least one delay, none negative")
    try:
        args.node_counts = [int(n) for n in args.nodes_per_region.split(",") if n.strip()]
    except ValueError:
        p.error(f"--nodes-per-region: expected comma-separated integers, got "
                f"{args.nodes_per_region!r}")
    if not args.node_counts or min(args.node_counts) < 1 \
            or len(set(args.node_counts)) != len(args.node_counts):
        p.error("--nodes-per-region: distinct positive integers")
    return args


def cluster_progress(message: str) -> None:
    if message.startswith(("[", "cluster up", "start-up", "  WAN")):
        log(f"  cluster {message.strip()}")


def cpu_and_memory() -> tuple[str, int]:
    """The CPU model from /proc/cpuinfo and the memory in kB from /proc/meminfo."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as fh:
        mem_kb = int(next(x for x in fh if x.startswith("MemTotal")).split()[1])
    return cpu, mem_kb


def scratch_folder(prefix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)  # PostgreSQL's unprivileged user must reach its data
    return folder


async def machine_facts(durable: bool) -> dict[str, Any]:
    cpu, mem_kb = cpu_and_memory()
    binaries = find_binaries()
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "memory_gib": round(mem_kb / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "redis": await raw.version_of(binaries.redis_server),
            "redis_source": binaries.redis_source,
            "postgres": await raw.version_of(binaries.pg("postgres")),
            "postgres_source": binaries.pg_source, "durable": durable,
            "redis_benchmark": str(raw.find_redis_benchmark() or "missing"),
            "pgbench": str(raw.find_pgbench(binaries) or "missing")}


async def write_phases(cluster: BenchCluster, http: aiohttp.ClientSession, load: Load,
                       pool: SeatPool, settle: Settle | None) -> dict[str, Any]:
    """Holds and confirms, sent direct and forwarded, and the one-seat rush."""
    out: dict[str, Any] = {}
    rush = pool.take("north", 1)
    show, (seat,) = next(iter(rush.items()))
    throughput = pool.rest()
    # Unmeasured warm-up, writes to any node: node pools grow to the phase's concurrency.
    warm_pool = {s: throughput.pop(s) for s in sorted(throughput)[::10]}
    warm = replace(load, duration_s=max(0.2, load.duration_s / 10),
                   max_requests=min(load.max_requests, 2000))
    log(f"   warm-up: {warm.duration_s:g} s of holds, payments and confirms, not measured")
    _, warm_holds = await phases.holds(cluster, http, warm, warm_pool, "any")
    await phases.confirms(cluster, http, warm, await pay(cluster, http, warm_holds), "any")
    if settle is not None:
        await settle.wait_empty()
        out["idle_cpu_ms_per_s"] = await settle.idle_rates(max(0.5, load.duration_s / 5))
        log("   idle CPU, ms per s: " + ", ".join(
            f"{k} {v:g}" for k, v in out["idle_cpu_ms_per_s"].items()))
    pools = split_pool(throughput)
    made: dict[str, list[Held]] = {}
    for route in ("direct", "forwarded"):
        log(f"1a holds sent {route}: {load.hold_clients} clients, "
            f"{sum(map(len, pools[route].values())):,} free seats in {len(pools[route])} shows")
        out[f"holds_{route}"], made[route] = await phases.holds(cluster, http, load,
                                                                pools[route], route, settle)
        log(f"   {_phase_line(out[f'holds_{route}'])}")
    log(f"1b {load.rush_clients} clients on one seat")
    out["one_seat"] = await phases.one_seat(cluster, http, load, show, seat)
    log(f"   answers {out['one_seat']['answers']}, p99 {out['one_seat']['p99_ms']} ms")
    cap = min(load.max_requests, int(CONFIRMS_PER_S * load.duration_s))
    for route in ("direct", "forwarded"):
        bookings = made[route][:cap]
        log(f"   paying {len(bookings):,} bookings held {route} at the gateway (captured at "
            "once; not measured)")
        started = time.perf_counter()
        paid = await pay(cluster, http, bookings)
        log(f"   captured in {time.perf_counter() - started:.1f} s")
        log(f"2  confirms sent {route}, of {len(paid):,} held bookings")
        out[f"confirms_{route}"] = await phases.confirms(cluster, http, load, paid, route,
                                                         settle)
        log(f"   {_phase_line(out[f'confirms_{route}'])}")
    return out


def split_pool(pool: dict[int, list[str]]) -> dict[str, dict[int, list[str]]]:
    """Every other show for each of the two routes (show ids interleave regions)."""
    shows = sorted(pool)
    return {"direct": {s: pool[s] for s in shows[0::2]},
            "forwarded": {s: pool[s] for s in shows[1::2]}}


def _phase_line(phase: dict[str, Any]) -> str:
    per = phase.get("cpu_ms_per_op") or {}
    tail = phase.get("after_load") or {}
    return (f"{phase['ok']:,} ok, {phase['ok_per_s']:,}/s, p99 {phase['p99_ms']} ms; CPU ms "
            f"per op: cluster {per.get('cluster', '-')}, nodes {per.get('nodes', '-')}"
            + (f"; backlog left {tail['backlog_at_end']['total']}, done "
               f"{tail['tail_s']:.1f} s later" if tail else ""))


async def read_phases(cluster: BenchCluster, http: aiohttp.ClientSession, load: Load,
                      aux: AuxServers) -> dict[str, Any]:
    out: dict[str, Any] = {}
    log("3  trivial aiohttp handler")
    out["reads_trivial"] = await phases.trivial_reads(cluster, http, load,
                                                      await aux.trivial_server())
    log(f"   {out['reads_trivial']['ok_per_s']:,} req/s")
    hot = cluster.shows(regions_of(cluster)[1])[-1]
    log(f"3  seat map of a hot show ({hot}), {load.read_clients} readers")
    out["reads_hot"] = await phases.hot_reads(cluster, http, load, hot)
    log(f"   {out['reads_hot']['ok_per_s']:,} req/s")
    log("3  seat maps of cold shows")
    out["reads_cold"] = await phases.cold_reads(cluster, http, load)
    log(f"   {out['reads_cold']['ok_per_s']:,} req/s")
    return out


def regions_of(cluster: BenchCluster) -> list[str]:
    return list(cluster.topology.regions)


async def cross_region(cluster: BenchCluster, http: aiohttp.ClientSession, load: Load,
                       pool: SeatPool) -> dict[str, Any]:
    regs = regions_of(cluster)
    live: dict[str, tuple[int, list[str]]] = {}
    for home in regs:
        show, seats = next(iter(pool.take(home, load.live_holds).items()))
        live[home] = (show, seats)
    wan_seats = load.wan_requests * 4 // len(regs) + 8
    pools = {h: {"local": pool.take(h, wan_seats), "remote": pool.take(h, wan_seats),
                 "warm": pool.take(h, len(cluster.nodes()))} for h in regs}
    log(f"4  change delay: {load.live_holds} holds per home region, WebSockets in every region")
    delay = await regions.change_delay(cluster, http, load, live)
    log(f"6  local vs remote latency ({load.wan_clients} clients)")
    local_remote = await regions.local_remote(cluster, http, load, pools)
    return {"change_delay": delay, "local_remote": local_remote}


async def raw_limits(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    servers = raw.ScratchServers(folder, durable=not args.fast)
    try:
        log("5  raw limits: fresh redis-server and PostgreSQL")
        await servers.start(hold_shows=max(20, int(RAW_HOLDS_PER_S * args.duration) // 100),
                            confirm_bookings=max(2000, int(RAW_CONFIRMS_PER_S * args.duration)))
        out: dict[str, Any] = {}
        log(f"   redis-benchmark: {args.redis_bench_requests:,} EVALSHA HOLD")
        out["redis_hold"] = await raw.redis_hold_limit(
            servers, args.redis_bench_requests, args.redis_bench_clients,
            timeout_s=60 + args.duration * 10)
        if "skipped" in out["redis_hold"]:
            log(f"   SKIPPED: {out['redis_hold']['skipped']}")
        log(f"   pgbench: hold write and confirm, {args.duration:g} s each")
        out["pg"] = await raw.pg_limits(servers, args.pgbench_clients, args.duration)
        log(f"7  hold stages from Python at {args.hold_clients} clients")
        out["stages"] = await raw.stage_timing(servers, args.hold_clients, args.duration / 2,
                                               args.max_requests)
        return out
    finally:
        servers.stop()


def plan(args: argparse.Namespace) -> list[tuple[int, int, set[str]]]:
    """The clusters to start, as (nodes per region, WAN delay, what runs there): the
    first node count at every delay (crossing regions on each; writes, reads and the
    token cost on the first), then each other node count at the first delay (writes)."""
    first, *others = args.node_counts
    out = [(first, d, {"cross"}) for d in args.delays]
    out[0][2].update({"peer", "token", "writes", "reads", "best"})
    out += [(n, args.delays[0], {"writes"}) for n in others]
    chosen = [(n, d, work & args.phase_set) for n, d, work in out]
    return [c for c in chosen if c[2]]


async def one_cluster(args: argparse.Namespace, load: Load, nodes: int, delay: int,
                      work: set[str], folder: Path, results: dict[str, Any]) -> None:
    async with bench_cluster(spec=SMOKE_CATALOG if args.smoke else BENCH_CATALOG,
                             nodes=nodes, durable=not args.fast, workers=args.workers,
                             wan_delay_ms=delay, progress=cluster_progress) as cluster:
        aux = AuxServers(folder / f"aux-{nodes}-{delay}", cluster.topology.secrets)
        if "token" in work:
            log(f"0  token verification: {args.token_calls:,} x 5 "
                "TokenVerifier.identity() in this process")
            results["token_verify"] = verify_cost(cluster.topology, args.token_calls)
            log(f"   {results['token_verify']['identity_us']} µs per valid token "
                f"({results['token_verify']['algorithm']}), "
                f"{results['token_verify']['bad_signature_us']} µs per forged one")
        connector = aiohttp.TCPConnector(limit=0)
        try:
            async with contextlib.AsyncExitStack() as stack:
                http = await stack.enter_async_context(aiohttp.ClientSession(
                    connector=connector, timeout=aiohttp.ClientTimeout(total=60)))
                settle, backlog = None, None
                if args.workers:
                    backlog = await stack.enter_async_context(Backlog(cluster))
                    settle = Settle(backlog, cpu_groups(cluster), args.settle_timeout)
                pool = SeatPool(cluster)
                # Two shows nobody touched, set aside before other phases take seats.
                rush_shows = pool.whole_shows(bestrush.HOME, 2) if "best" in work else []
                if "peer" in work:
                    results["peer"] = await peer.peer_phases(
                        cluster, http, load, pool, settle, backlog, args.peer_clients,
                        args.peer_duration)
                if "cross" in work:
                    cross = await cross_region(cluster, http, load, pool)
                    results["runs"][str(delay)] = {**cross, "wan_delay_ms": delay}
                if "writes" in work:
                    results["writes"][str(nodes)] = {
                        "nodes_per_region": nodes, "wan_delay_ms": delay,
                        **await write_phases(cluster, http, load, pool, settle)}
                if "reads" in work:
                    results["reads"] = await read_phases(cluster, http, load, aux)
                if "best" in work:
                    results["best_rush"] = await bestrush.rush_phases(
                        cluster, http, load, rush_shows, settle, args.best_clients,
                        args.best_duration, args.best_max_requests)
        finally:
            aux.stop()
        crashed = cluster.launcher.crashed()
        if crashed:
            results.setdefault("crashed", []).extend(crashed)
            log(f"WARNING: processes died during the run: {crashed}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    durable = not args.fast
    load = Load(args.duration, args.max_requests, args.load_procs, args.hold_clients,
                args.read_clients, args.rush_clients, args.wan_clients, args.wan_requests,
                args.live_holds)
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": await machine_facts(durable),
        "config": {"durable": durable, "wan_delays_ms": args.delays, "regions": 3,
                   "nodes_per_region": args.node_counts, "workers": args.workers,
                   "duration_s": args.duration, "max_requests": args.max_requests,
                   "load_procs": args.load_procs, "hold_clients": args.hold_clients,
                   "read_clients": args.read_clients, "rush_clients": args.rush_clients,
                   "wan_clients": args.wan_clients, "wan_requests": args.wan_requests,
                   "live_holds": args.live_holds, "smoke": args.smoke,
                   "catalog": (SMOKE_CATALOG if args.smoke else BENCH_CATALOG).__dict__,
                   "client": "aiohttp, one ClientSession (limit 0) per load process, uvloop",
                   "auth": "HS256 bearer token per write, a fresh user per hold",
                   "payments": "captured at once, no webhook: the confirm phase sells",
                   "token_calls": args.token_calls, "phases": sorted(args.phase_set),
                   "peer_clients": args.peer_clients, "peer_duration_s": args.peer_duration,
                   "best_clients": args.best_clients, "best_duration_s": args.best_duration,
                   "best_max_requests": args.best_max_requests,
                   "shared_machine": True},
        "load_average": {"start": os.getloadavg()},
        "writes": {}, "reads": {}, "runs": {}, "raw": None, "token_verify": None,
        "peer": None, "best_rush": None}
    folder = scratch_folder("bookcluster-bench-aux-")
    try:
        clusters = plan(args)
        for i, (nodes, delay, work) in enumerate(clusters):
            log(f"cluster {i + 1}/{len(clusters)}: 3 regions x {nodes} node(s), WAN delay "
                f"{delay} ms, durable={durable}, workers={'on' if args.workers else 'off'}: "
                + ", ".join(sorted(work)))
            await one_cluster(args, load, nodes, delay, work, folder, results)
        if "raw" in args.phase_set:
            results["raw"] = await raw_limits(args, folder / "raw")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    results["load_average"]["end"] = os.getloadavg()
    results["finished_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    results["derived"] = derive(results)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The default loop, not uvloop: the launcher runs initdb with `user=`, which
    # uvloop's subprocess_exec does not take. The load generators use uvloop.
    results = asyncio.run(run(args))
    print()
    print(render(results))
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = results["started_at"].replace("-", "").replace(":", "")
    json_path = args.results / f"bench-{stamp}.json"
    png_path = args.results / f"bench-{stamp}.png"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    draw(results, png_path)
    print(f"\nresults: {json_path}\nchart:   {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
