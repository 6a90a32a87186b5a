#!/usr/bin/env python3
"""CPU per hold of a node with tracing off and on, side by side (`bookcluster/tracing.py`).

    .venv/bin/python loadtests/tracing_cpu.py [--holds 200] [--rounds 2] [--concurrency 4]

Starts a small local cluster (one node per region, not durable), then two extra north
nodes: one as usual, one with OTEL_EXPORTER_OTLP_ENDPOINT pointing at an OTLP/HTTP
receiver in this script (so its spans are really batched, encoded and sent: the
exporter's thread is in the node's CPU). Each round sends `--holds` one-seat holds of
north shows (each by a user of its own, so no limit refuses one) to one node, then as
many to the other, alternating which goes first; the CPU of each node's process (user
+ system, psutil) is read around its turn. Prints CPU milliseconds per hold for each,
the difference, and the spans received. Needs the `otel` extra (`pip install -e
'.[otel]'`). The access log is off on both nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
from typing import Any

import aiohttp
import psutil
from aiohttp import web
from benchlib.local import BenchCluster, bench_cluster

from bookcluster.local.ports import free_ports
from bookcluster.node.auth import mint
from bookcluster.ops.demo_catalog import CatalogSpec
from bookcluster.topology.model import Endpoint

SPEC = CatalogSpec(theatres_per_city=2, cities_per_region=2, days=1, shows_per_day=4)


class Receiver:
    """Counts the OTLP/HTTP trace exports it is sent (bytes and requests)."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0

    async def receive(self, request: web.Request) -> web.Response:
        self.bytes += len(await request.read())
        self.requests += 1
        return web.Response(body=b"", content_type="application/x-protobuf")


def cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


async def holds(http: aiohttp.ClientSession, node: str, work: list[tuple[int, str, str]],
                concurrency: int) -> int:
    """One-seat holds; returns how many answered 201."""
    queue = iter(work)
    done = 0

    async def one_client() -> None:
        nonlocal done
        for show, seat, token in queue:
            async with http.post(f"{node}/booking/seats/{show}/lock",
                                 json={"seat_ids": [seat]},
                                 headers={"Authorization": f"Bearer {token}"}) as resp:
                await resp.read()
                done += resp.status == 201

    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return done


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.receive)
    runner = web.AppRunner(app)
    await runner.setup()
    async with bench_cluster(spec=SPEC, nodes=1, durable=False, workers=False,
                             wan_delay_ms=0, progress=lambda line: print(line, flush=True)
                             ) as cluster:
        collector_port, plain_port, traced_port = free_ports(3)
        await web.TCPSite(runner, "127.0.0.1", collector_port).start()
        plain = await cluster.launcher.start_extra_node(
            "north", Endpoint("127.0.0.1", plain_port), [])
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{collector_port}"
        os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "1000"
        try:
            traced = await cluster.launcher.start_extra_node(
                "north", Endpoint("127.0.0.1", traced_port), [])
        finally:
            del os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"], os.environ["OTEL_BSP_SCHEDULE_DELAY"]
        nodes = {"off": (f"http://127.0.0.1:{plain_port}", plain.popen.pid),
                 "on": (f"http://127.0.0.1:{traced_port}", traced.popen.pid)}
        work = seats_for(cluster, args.holds * args.rounds * 2 + args.holds * 2)
        per_hold: dict[str, list[float]] = {"off": [], "on": []}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            await warm(http, nodes, work, args)
            for round_no in range(args.rounds):
                order = ("off", "on") if round_no % 2 == 0 else ("on", "off")
                for mode in order:
                    url, pid = nodes[mode]
                    batch = [next(work) for _ in range(args.holds)]
                    before = cpu_s(pid)
                    held = await holds(http, url, batch, args.concurrency)
                    per_hold[mode].append((cpu_s(pid) - before) * 1000 / max(held, 1))
                    print(f"round {round_no + 1} tracing {mode}: {held} holds, "
                          f"{per_hold[mode][-1]:.2f} ms CPU per hold", flush=True)
            await asyncio.sleep(2.5)  # the last batch of spans is exported
        await runner.cleanup()
    off, on = statistics.median(per_hold["off"]), statistics.median(per_hold["on"])
    return {"holds_per_round": args.holds, "rounds": args.rounds,
            "cpu_ms_per_hold_off": round(off, 3), "cpu_ms_per_hold_on": round(on, 3),
            "tracing_cost_ms_per_hold": round(on - off, 3),
            "tracing_cost_percent": round(100 * (on - off) / off, 1) if off else None,
            "exports_received": receiver.requests, "export_bytes": receiver.bytes}


async def warm(http: aiohttp.ClientSession, nodes: dict[str, tuple[str, int]],
               work: Any, args: argparse.Namespace) -> None:
    """A first batch on each node (connections, caches, code paths), not measured."""
    for url, _pid in nodes.values():
        await holds(http, url, [next(work) for _ in range(args.holds)], args.concurrency)


def seats_for(cluster: BenchCluster, count: int) -> Any:
    """(show, seat, token) of `count` distinct north seats, each with its own user."""
    pairs = [(show, seat) for show in cluster.shows("north") for seat in cluster.seats_of(show)]
    if len(pairs) < count:
        raise SystemExit(f"only {len(pairs)} north seats for {count} holds: fewer --holds")
    users = (f"trace-bench-{i}" for i in itertools.count())
    return iter([(show, seat, mint(cluster.topology, next(users), 3600))
                 for show, seat in pairs[:count]])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--holds", type=int, default=200, help="holds per node per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=4)
    args = p.parse_args()
    result = asyncio.run(measure(args))
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
