#!/usr/bin/env python3
"""1,000 clients racing for one seat, on 1 and on 5 nodes per region.

    .venv/bin/python loadtests/rush.py [--nodes 1,5] [--clients 1000] [--rounds 3] [--json F]

For each entry of --nodes a fresh local cluster (3 regions, durable unless
--fast, workers off, no WAN proxy) on free loopback ports. Each round sends
--clients holds of one seat of a north show, each by its own user, all at the
same moment from --load-procs processes, spread over every node of every region
(so two thirds are forwarded to a north node, as in `bench.py` phase 1b); every
round takes a seat nobody asked for before. Round 1 meets cold connection pools
(the first writes since start-up); later rounds warm ones. The nodes' seat caches
do not hold the show unless --seat-maps.

Prints per round: answers by status (a 5xx with what its message says failed),
p50/p90/p99/max, the CPU seconds of each process group over the round (and how
busy the whole machine was: it may be shared), what the
nodes counted (holds by outcome, early-refusal reads, writes shed), and
whether PostgreSQL holds exactly one hold of the seat. Every loop is bounded: one
request per client per round, a 30 s client timeout, --rounds rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from benchlib import log
from benchlib.local import BenchCluster, bench_cluster
from benchlib.phases import Load, one_seat
from prometheus_client.parser import text_string_to_metric_families

from bookcluster.ops.demo_catalog import CatalogSpec
from bookcluster.stores.connections import PG_TOOL_SESSION, pg_dsn, pg_login

CATALOG = CatalogSpec(theatres_per_city=1, cities_per_region=1, days=1, shows_per_day=2)
HOME = "north"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", default="1,5", help="nodes per region, a cluster each (1,5)")
    p.add_argument("--clients", type=int, default=1000, help="clients per round (1000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per cluster (3)")
    p.add_argument("--load-procs", type=int, default=2, help="load generator processes (2)")
    p.add_argument("--fast", action="store_true", help="durable: false")
    p.add_argument("--seat-maps", action="store_true",
                   help="before each round every node serves the show's seat map once, as "
                        "for clients that look before they pick (their seat caches hold it)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--logs", type=Path,
                   help="copy each cluster's process logs here before it is removed")
    args = p.parse_args(argv)
    args.node_counts = [int(n) for n in args.nodes.split(",") if n.strip()]
    if not args.node_counts or min(args.node_counts) < 1 or args.clients < 1 \
            or not 1 <= args.rounds <= 20:
        p.error("--nodes: positive integers; --clients >= 1; --rounds 1..20")
    return args


async def holds_in_postgres(cluster: BenchCluster, show: int, seat: str) -> int:
    """Bookings PostgreSQL records as holding or owning `seat`."""
    conn = await asyncpg.connect(pg_dsn(cluster.topology.region(HOME).pg_primary),
                                 **pg_login(cluster.topology.secrets),
                                 server_settings=PG_TOOL_SESSION)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM booking_seat bs JOIN booking b ON b.id = bs.booking_id "
            "WHERE b.show_id = $1 AND bs.seat_id = $2 AND b.status IN "
            "('INITIATED', 'CONFIRMED')", show, seat))
    finally:
        await conn.close()


# What the nodes counted, summed over all of them: (sample name, label to split by).
NODE_COUNTS = {"holds": ("bookcluster_holds_total", "outcome"),
               "early_refusal_reads": ("bookcluster_early_refusal_reads_total", None),
               "writes_shed": ("bookcluster_writes_shed_total", "reason")}


async def node_counts(http: aiohttp.ClientSession, nodes: list[str]) -> Counter[str]:
    out: Counter[str] = Counter()
    for node in nodes:
        async with http.get(f"{node}/metrics") as resp:
            text = await resp.text()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                for short, (name, label) in NODE_COUNTS.items():
                    if sample.name == name:
                        out[f"{short} {sample.labels[label]}" if label else short] += \
                            int(sample.value)
    return out


async def read_seat_maps(http: aiohttp.ClientSession, nodes: list[str], show: int) -> None:
    """Every node reads the show's seat map once, as clients do before picking a seat."""
    for node in nodes:
        async with http.get(f"{node}/shows/{show}/seats") as resp:
            await resp.read()


async def one_round(cluster: BenchCluster, http: aiohttp.ClientSession, args: argparse.Namespace,
                    show: int, seat: str, tag: str) -> dict[str, Any]:
    nodes = cluster.nodes()
    if args.seat_maps:
        await read_seat_maps(http, nodes, show)
    counts0 = await node_counts(http, nodes)
    load = Load(duration_s=60, max_requests=args.clients, procs=args.load_procs,
                hold_clients=0, read_clients=0, rush_clients=args.clients, wan_clients=0,
                wan_requests=0, live_holds=0)
    out = await one_seat(cluster, http, load, show, seat, users=tag)
    counted = await node_counts(http, nodes)
    counted.subtract(counts0)
    return {**out, "holds_in_postgres": await holds_in_postgres(cluster, show, seat),
            "node_counts": {k: v for k, v in sorted(counted.items()) if v},
            # the whole machine, whoever used it: the box is shared
            "machine_busy_share": out["cpu"]["machine_busy_share"]}


async def one_cluster(args: argparse.Namespace, nodes: int) -> list[dict[str, Any]]:
    rounds = []
    async with bench_cluster(spec=CATALOG, nodes=nodes, durable=not args.fast, workers=False,
                             wan_delay_ms=0, progress=lambda _: None) as cluster:
        show = cluster.shows(HOME)[0]
        seats = cluster.seats_of(show)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=aiohttp.ClientTimeout(total=60)) as http:
            for r in range(args.rounds):
                seat = seats[r]
                log(f"{nodes} node(s)/region, round {r + 1}: {args.clients} clients on "
                    f"show {show} seat {seat}")
                out = await one_round(cluster, http, args, show, seat, f"rush{nodes}-{r}")
                rounds.append({"nodes_per_region": nodes, "round": r + 1, **out})
                print(render_round(rounds[-1]), flush=True)
        if args.logs:
            shutil.copytree(cluster.topology.settings.run_dir / "logs",
                            args.logs / f"{nodes}-per-region", dirs_exist_ok=True)
        crashed = cluster.launcher.crashed()
        if crashed:
            log(f"WARNING: processes died during the run: {crashed}")
    return rounds


def render_round(r: dict[str, Any]) -> str:
    cpu = r["cpu"]
    groups = ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu["cpu_s"].items(),
                                                          key=lambda kv: -kv[1]) if v)
    answers = "\n".join(f"       {n:5d} x {what}" for what, n in r["answers"].items())
    ok = "ok" if r["created_201"] == 1 and r["holds_in_postgres"] == 1 \
        and r["clean_409"] == r["count"] - 1 else "NOT MET"
    return (f"  {r['nodes_per_region']} node(s)/region, round {r['round']}: "
            f"p50 {r['p50_ms']:.0f} ms, p90 {r['p90_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, "
            f"max {r['max_ms']:.0f} ms over {r['elapsed_s']:.2f} s; node mean "
            f"{r['server_mean_ms']} ms\n"
            f"     answers ({ok}; PostgreSQL holds of the seat: {r['holds_in_postgres']}):\n"
            f"{answers}\n"
            f"     CPU s: {groups}; the whole machine (shared; over the round) was "
            f"{r['machine_busy_share'] * 100:.0f}% busy\n"
            f"     nodes counted: {r['node_counts']}")


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for nodes in args.node_counts:
        log(f"cluster: 3 regions x {nodes} node(s), durable={not args.fast}")
        out += await one_cluster(args, nodes)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The default loop: the launcher runs initdb with `user=`, which uvloop lacks.
    rounds = asyncio.run(run(args))
    print("\nsummary")
    for r in rounds:
        others = {k: v for k, v in r["answers"].items() if k not in ("201", "409")}
        print(f"  {r['nodes_per_region']}/region round {r['round']}: 201 x {r['created_201']}, "
              f"409 x {r['clean_409']}, other {others or 'none'}; p50 {r['p50_ms']:.0f} / "
              f"p99 {r['p99_ms']:.0f} ms; CPU {sum(r['cpu']['cpu_s'].values()):.2f} s; "
              f"machine {r['machine_busy_share'] * 100:.0f}% busy")
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=2) + "\n")
    met = all(r["created_201"] == 1 and r["clean_409"] == r["count"] - 1
              and r["holds_in_postgres"] == 1 for r in rounds)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
