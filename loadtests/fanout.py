#!/usr/bin/env python3
"""What a seat change costs the nodes that do not serve its show (fan-out).

    .venv/bin/python loadtests/fanout.py [--duration 8] [--nodes-per-region 5] [--fast]

A fresh local cluster (3 regions x N nodes, durable unless --fast). Nodes get
one of three roles per region:
  entry      nodes(r)[0:2]   take the holds of region r's shows (sent straight home)
  reader     nodes(r)[-1]    read every one of those shows first, so they follow them
  bystander  the rest        never touch those shows
Then, for --duration seconds each: nothing (each node's idle CPU), and holds of
1-2 free seats by --clients clients. Prints, per role, the change messages a
node received and its CPU per change (idle subtracted), and the node CPU per
hold across the cluster. A bystander's CPU per change is the cost of fan-out
to a node that does not serve the show (target: near zero).

Run it on two checkouts to compare (the cluster runs the code it is started
from): e.g. `git archive main | tar -x -C /tmp/main`, copy this file into
/tmp/main/loadtests/, and run it there with `PYTHONPATH=/tmp/main`.
Bounded: every phase ends after --duration or --max-requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
from benchlib import loadgen, log
from benchlib.cpu import cpu_seconds
from benchlib.local import BenchCluster, bench_cluster, counter

import bookcluster
from bookcluster.ops.demo_catalog import CatalogSpec

# 6 theatres x 2 days x 4 shows per region: ~28,000 seats for sale.
CATALOG = CatalogSpec(theatres_per_city=2, cities_per_region=3, days=2, shows_per_day=4)
ENTRY_NODES = 2
CHANGES = "bookcluster_seat_changes_total"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=8.0, help="seconds per phase (8)")
    p.add_argument("--max-requests", type=int, default=20_000, help="holds at most (20000)")
    p.add_argument("--clients", type=int, default=32, help="concurrent hold clients (32)")
    p.add_argument("--nodes-per-region", type=int, default=5)
    p.add_argument("--fast", action="store_true", help="durable: false")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    if args.nodes_per_region < ENTRY_NODES + 2:
        p.error(f"--nodes-per-region: at least {ENTRY_NODES + 2} (entry, reader, bystander)")
    return args


def roles(cluster: BenchCluster) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"entry": [], "reader": [], "bystander": []}
    for region in cluster.topology.regions:
        nodes = cluster.nodes(region)
        out["entry"] += nodes[:ENTRY_NODES]
        out["reader"].append(nodes[-1])
        out["bystander"] += nodes[ENTRY_NODES:-1]
    return out


def node_pids(cluster: BenchCluster) -> dict[str, list[int]]:
    """node URL -> [its pid]"""
    return {f"http://{c.spec.host}:{c.spec.port}": [c.pid]
            for c in cluster.launcher.supervisor.children if c.spec.role == "node"}


async def received(http: aiohttp.ClientSession, nodes: list[str]) -> dict[str, float]:
    return {n: await counter(http, [n], CHANGES) for n in nodes}


async def measure(cluster: BenchCluster, http: aiohttp.ClientSession, duration_s: float,
                  specs: list[dict[str, Any]] | None) -> dict[str, Any]:
    """CPU seconds and change messages per node over one phase (idle when no specs)."""
    pids = node_pids(cluster)
    msgs0 = await received(http, list(pids))
    cpu0 = cpu_seconds(pids)
    started = time.perf_counter()
    if specs:
        result = await loadgen.run_processes(specs, duration_s * 3 + 60)
    else:
        await asyncio.sleep(duration_s)
        result = {"statuses": {}}
    elapsed = time.perf_counter() - started
    cpu1 = cpu_seconds(pids)
    msgs1 = await received(http, list(pids))
    return {"elapsed_s": elapsed, "statuses": result["statuses"],
            "cpu_s": {n: cpu1[n] - cpu0[n] for n in pids},
            "messages": {n: msgs1[n] - msgs0[n] for n in pids}}


def hold_specs(cluster: BenchCluster, args: argparse.Namespace, role_of: dict[str, list[str]],
               pool: dict[str, dict[int, list[str]]]) -> list[dict[str, Any]]:
    groups = [{"nodes": [n for n in role_of["entry"] if n in cluster.nodes(r)],
               "pool": {str(s): seats for s, seats in pool[r].items()}}
              for r in cluster.topology.regions]
    return [{"kind": "holds", "concurrency": args.clients, "duration_s": args.duration,
             "max_requests": args.max_requests, "seed": 1, "user": "fanout", "seats": [1, 2],
             "topology": str(cluster.topology.path), "groups": groups,
             "warm_urls": [f"{n}/healthz" for n in role_of["entry"]]}]


def report(idle: dict[str, Any], load: dict[str, Any], role_of: dict[str, list[str]]
           ) -> dict[str, Any]:
    holds = load["statuses"].get("201", 0)
    out: dict[str, Any] = {
        "holds": holds, "holds_per_s": round(holds / load["elapsed_s"], 1),
        "statuses": load["statuses"], "roles": {}}
    extra = {n: load["cpu_s"][n] - idle["cpu_s"][n] * load["elapsed_s"] / idle["elapsed_s"]
             for n in load["cpu_s"]}
    for role, nodes in role_of.items():
        cpu = sum(extra[n] for n in nodes)
        out["roles"][role] = {
            "nodes": len(nodes),
            "messages_per_node": round(sum(load["messages"][n] for n in nodes) / len(nodes)),
            "cpu_ms_per_node": round(cpu / len(nodes) * 1000, 1),
            "cpu_us_per_change_per_node": round(cpu / len(nodes) / holds * 1e6, 1)
            if holds else None}
    total = sum(load["cpu_s"].values())
    out["node_cpu_ms_per_hold"] = round(total / holds * 1000, 3) if holds else None
    out["node_cpu_ms_per_hold_idle_subtracted"] = \
        round(sum(extra.values()) / holds * 1000, 3) if holds else None
    out["idle_cpu_ms_per_s_per_node"] = round(
        sum(idle["cpu_s"].values()) / len(idle["cpu_s"]) / idle["elapsed_s"] * 1000, 2)
    return out


def render(out: dict[str, Any]) -> str:
    lines = [f"code: {out['code']}",
             f"holds: {out['holds']:,} ({out['holds_per_s']:,}/s), answers {out['statuses']}",
             f"node CPU per hold, all {sum(r['nodes'] for r in out['roles'].values())} nodes: "
             f"{out['node_cpu_ms_per_hold']} ms ({out['node_cpu_ms_per_hold_idle_subtracted']} "
             f"ms with idle subtracted; idle {out['idle_cpu_ms_per_s_per_node']} ms/s per node)",
             f"{'role':<10} {'nodes':>5} {'msgs/node':>10} {'CPU ms/node':>12} "
             f"{'µs/change/node':>15}"]
    for role, r in out["roles"].items():
        lines.append(f"{role:<10} {r['nodes']:>5} {r['messages_per_node']:>10,} "
                     f"{r['cpu_ms_per_node']:>12} {r['cpu_us_per_change_per_node']!s:>15}")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with bench_cluster(spec=CATALOG, nodes=args.nodes_per_region, durable=not args.fast,
                             workers=False, wan_delay_ms=0,
                             progress=lambda m: None) as cluster:
        role_of = roles(cluster)
        pool = {r: {s: cluster.seats_of(s) for s in cluster.shows(r)}
                for r in cluster.topology.regions}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=60)) as http:
            for region in cluster.topology.regions:  # readers follow every show
                reader = cluster.nodes(region)[-1]
                for show in cluster.shows():
                    async with http.get(f"{reader}/shows/{show}/seats") as resp:
                        await resp.read()
            log(f"idle: {args.duration:g} s")
            idle = await measure(cluster, http, args.duration, None)
            log(f"holds: {args.clients} clients, {args.duration:g} s, straight to home nodes")
            load = await measure(cluster, http, args.duration,
                                 hold_specs(cluster, args, role_of, pool))
        crashed = cluster.launcher.crashed()
        if crashed:
            raise RuntimeError(f"processes died during the run: {crashed}")
    out = report(idle, load, role_of)
    out["code"] = str(Path(bookcluster.__file__).parent.parent)
    out["config"] = {"duration_s": args.duration, "clients": args.clients,
                     "nodes_per_region": args.nodes_per_region, "durable": not args.fast,
                     "date": date.today().isoformat()}
    return out


def main() -> int:
    args = parse_args()
    out = asyncio.run(run(args))
    print(render(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
