"""The measured phases against a running bench cluster.

Each throughput phase runs in the load generator processes (`loadgen.py`) and
reports what the client saw (successes per second, p50/p99 of all answers,
statuses, error codes), what the nodes measured themselves (mean of
`bookcluster_http_request_seconds` over the phase) and where the machine's CPU
went (nodes, Redis, PostgreSQL, the gateway, the load generators). Every write
carries its own user's token; confirms use payments the gateway captured
(`payments.py`).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp

from cluster.supervisor import Child
from region_node import keys
from router.registry import make_redis

from . import loadgen
from .local import BenchCluster, counter, cpu_groups, cpu_seconds, cpu_share, histogram
from .payments import Held, held
from .stats import summarize
from .tokens import bearer, token_for

HOLD_ROUTE = ("/booking/seats/{show_id}/lock", "POST")
CONFIRM_ROUTE = ("/booking/booking/{booking_id}/confirm", "POST")
SEATS_ROUTE = ("/shows/{show_id}/seats", "GET")
METRIC = "bookcluster_http_request_seconds"


@dataclass(frozen=True)
class Load:
    duration_s: float  # per phase
    max_requests: int  # per phase
    procs: int  # load generator processes
    hold_clients: int
    read_clients: int
    rush_clients: int  # the one-seat phase
    wan_clients: int
    wan_requests: int
    live_holds: int  # per home region


class SeatPool:
    """Free seats handed out once: phases never try to hold the same seat twice."""

    def __init__(self, cluster: BenchCluster) -> None:
        self.left = {r: [(s, cluster.seats_of(s)) for s in cluster.shows(r)]
                     for r in cluster.topology.regions}

    def take(self, region: str, seats: int) -> dict[int, list[str]]:
        """`seats` free seats of `region`'s shows, from as few shows as possible."""
        out: dict[int, list[str]] = {}
        while seats > 0:
            if not self.left[region]:
                raise RuntimeError(f"the bench catalog has too few seats in {region}")
            show, free = self.left[region][0]
            grab = free[:seats]
            del free[: len(grab)]
            out.setdefault(show, []).extend(grab)
            seats -= len(grab)
            if not free:
                self.left[region].pop(0)
        return out

    def rest(self) -> dict[int, list[str]]:
        out = {show: free for shows in self.left.values() for show, free in shows if free}
        for shows in self.left.values():
            shows.clear()
        return out


def _share(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _rotate(items: list[str], by: int) -> list[str]:
    by %= max(1, len(items))
    return items[by:] + items[:by]


def _healthz(nodes: list[str]) -> list[str]:
    return [f"{n}/healthz" for n in nodes]


async def measured(cluster: BenchCluster, http: aiohttp.ClientSession,
                   specs: list[dict[str, Any]], route: tuple[str, str] | None,
                   timeout_s: float, extra_pids: dict[str, list[int]] | None = None
                   ) -> dict[str, Any]:
    """Run the specs in load generator processes; add server-side means and CPU shares."""
    nodes = cluster.nodes()
    groups = {**cpu_groups(cluster), **(extra_pids or {})}
    before = await histogram(http, nodes, METRIC, route=route[0], method=route[1]) \
        if route else (0.0, 0.0)
    cpu0 = cpu_seconds(groups)
    result = await loadgen.run_processes(specs, timeout_s)
    cpu1 = cpu_seconds(groups)
    after = await histogram(http, nodes, METRIC, route=route[0], method=route[1]) \
        if route else (0.0, 0.0)
    served = after[1] - before[1]
    result["server_mean_ms"] = round((after[0] - before[0]) / served * 1000, 3) \
        if served else None
    result["cpu"] = cpu_share(cpu0, cpu1, result["client_cpu_s"], result["elapsed_s"])
    return result


def report(result: dict[str, Any], ok: str) -> dict[str, Any]:
    """What a phase publishes: `ok` answers per second, latency of every answer."""
    return {**summarize(result["latencies"], result["elapsed_s"]),
            "ok": result["statuses"].get(ok, 0),
            "ok_per_s": round(result["statuses"].get(ok, 0) / result["elapsed_s"], 1),
            "statuses": result["statuses"], "errors": result["errors"],
            "server_mean_ms": result.get("server_mean_ms"), "cpu": result.get("cpu"),
            "exhausted": result["exhausted"], "processes": result["processes"],
            "bytes_per_answer": round(result.get("bytes", 0) / len(result["latencies"]))
            if result["latencies"] else None}


# -- 1a, 2: holds and confirms --------------------------------------------------------

async def holds(cluster: BenchCluster, http: aiohttp.ClientSession, load: Load,
                pool: dict[int, list[str]]) -> tuple[dict[str, Any], list[Held]]:
    """Holds of 1-4 random free seats of many shows, from clients spread over every node,
    each by a fresh user."""
    nodes, shows = cluster.nodes(), sorted(pool)
    specs = [{"kind": "holds", "concurrency": clients, "duration_s": load.duration_s,
              "max_requests": cap, "seed": i, "user": f"bench{i}",
              "topology": str(cluster.topology.path), "warm_urls": _healthz(nodes),
              "groups": [{"nodes": _rotate(nodes, i * 7),
                          "pool": {str(s): pool[s] for s in shows[i::load.procs]}}]}
             for i, (clients, cap) in enumerate(zip(_share(load.hold_clients, load.procs),
                                                    _share(load.max_requests, load.procs),
                                                    strict=True))]
    result = await measured(cluster, http, specs, HOLD_ROUTE, load.duration_s * 3 + 60)
    return report(result, "201"), held(result["created"])


async def confirms(cluster: BenchCluster, http: aiohttp.ClientSession, load: Load,
                   bookings: list[list[str]]) -> dict[str, Any]:
    """`bookings`: [booking, owner's token, captured payment id] (`payments.pay`)."""
    nodes = cluster.nodes()
    specs = [{"kind": "confirms", "concurrency": clients, "duration_s": load.duration_s,
              "max_requests": cap, "seed": i, "warm_urls": _healthz(nodes),
              "groups": [{"nodes": _rotate(nodes, i * 7),
                          "bookings": bookings[i::load.procs]}]}
             for i, (clients, cap) in enumerate(zip(_share(load.hold_clients, load.procs),
                                                    _share(load.max_requests, load.procs),
                                                    strict=True))]
    result = await measured(cluster, http, specs, CONFIRM_ROUTE, load.duration_s * 3 + 60)
    return report(result, "200")


# -- 1b: everyone wants the same seat -------------------------------------------------

async def one_seat(cluster: BenchCluster, http: aiohttp.ClientSession, load: Load,
                   show: int, seat: str) -> dict[str, Any]:
    nodes = cluster.nodes()
    requests = [["POST", f"{nodes[j % len(nodes)]}/booking/seats/{show}/lock",
                 {"seat_ids": [seat]}, bearer(token_for(cluster.topology, f"rush-{j}"))]
                for j in range(load.rush_clients)]
    specs = [{"kind": "burst", "concurrency": len(part), "duration_s": 60,
              "max_requests": len(part), "warm_urls": [
                  f"{nodes[j % len(nodes)]}/healthz" for j in range(i, len(requests),
                                                                    load.procs)],
              "requests": part}
             for i in range(load.procs) if (part := requests[i::load.procs])]
    result = await measured(cluster, http, specs, HOLD_ROUTE, 120)
    answers = result["results"]
    other = Counter(f"{a['status']} {a['error']}" for a in answers
                    if a["status"] != 201 and not (a["status"] == 409
                                                   and a["error"] == "seats_unavailable"))
    return {**summarize([a["ms"] for a in answers], result["elapsed_s"]),
            "clients": load.rush_clients, "show_id": show, "seat_id": seat,
            "created_201": sum(a["status"] == 201 for a in answers),
            "clean_409": sum(a["status"] == 409 and a["error"] == "seats_unavailable"
                             for a in answers),
            "other": dict(other), "server_mean_ms": result["server_mean_ms"],
            "cpu": result["cpu"]}


# -- 3: seat-map reads and the trivial handler -----------------------------------------

def _read_specs(load: Load, groups: list[list[str]], warm: list[str], *,
                urls: list[str] | None = None, max_requests: int | None = None
                ) -> list[dict[str, Any]]:
    cap = max_requests if max_requests is not None else load.max_requests
    return [{"kind": "gets", "concurrency": clients, "duration_s": load.duration_s,
             "max_requests": part_cap, "seed": i, "warm_urls": warm, "groups": groups,
             "once": urls is not None, "urls": urls[i::load.procs] if urls else []}
            for i, (clients, part_cap) in enumerate(zip(_share(load.read_clients, load.procs),
                                                        _share(cap, load.procs), strict=True))]


async def trivial_reads(cluster: BenchCluster, http: aiohttp.ClientSession, load: Load,
                        server: Child) -> dict[str, Any]:
    url = server.spec.address
    specs = _read_specs(load, [[f"{url}/"]], [f"{url}/healthz"])
    return report(await measured(cluster, http, specs, None, load.duration_s * 3 + 60,
                                 {"trivial server": [server.pid]}), "200")


async def hot_reads(cluster: BenchCluster, http: aiohttp.ClientSession, load: Load,
                    show: int) -> dict[str, Any]:
    """One show, cached on every node; each reader reads from nodes of its own region."""
    for node in cluster.nodes():
        async with http.get(f"{node}/shows/{show}/seats") as resp:
            await resp.read()
    groups = [[f"{n}/shows/{show}/seats" for n in cluster.nodes(r)]
              for r in cluster.topology.regions]
    specs = _read_specs(load, groups, _healthz(cluster.nodes()))
    result = await measured(cluster, http, specs, SEATS_ROUTE, load.duration_s * 3 + 60)
    return {**report(result, "200"), "show_id": show}


async def invalidate(cluster: BenchCluster, shows: list[int]) -> None:
    """A RESET change per show on its home master: every node forgets those shows."""
    for region in cluster.topology.regions:
        mine = [s for s in shows if cluster.home_of(s) == region]
        if not mine:
            continue
        redis = make_redis(cluster.topology.region(region).redis_master,
                           cluster.topology.secrets, timeout_s=10.0)
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for show in mine:
                    pipe.incr(keys.show_version(show))
                versions = await pipe.execute()
            async with redis.pipeline(transaction=False) as pipe:
                for show, version in zip(mine, versions, strict=True):
                    pipe.publish(keys.SEAT_CHANGES_CHANNEL, json.dumps(
                        {"show": show, "version": version, "status": "RESET", "seats": []}))
                await pipe.execute()
        finally:
            await redis.aclose()
    # The RESET reaches remote replicas through the WAN link.
    await asyncio.sleep(0.3 + 2 * cluster.wan_delay_ms / 1000)


async def cold_reads(cluster: BenchCluster, http: aiohttp.ClientSession,
                     load: Load) -> dict[str, Any]:
    """Rounds of: invalidate every show, then read each (node, show) pair exactly once.

    Only the reads count towards the rate; rounds go on until `duration_s` of wall
    time (invalidations included) or `max_requests` reads."""
    shows, nodes = cluster.shows(), cluster.nodes()
    pairs = [f"{n}/shows/{s}/seats" for s in shows for n in nodes]
    merged: list[dict[str, Any]] = []
    misses0 = await counter(http, nodes, "bookcluster_seat_cache_lookups_total",
                            result="miss")
    started, left = time.perf_counter(), load.max_requests
    while left > 0 and (not merged or time.perf_counter() - started < load.duration_s):
        await invalidate(cluster, shows)
        batch = pairs[:left]
        specs = _read_specs(load, [[]], _healthz(nodes), urls=batch, max_requests=len(batch))
        result = await measured(cluster, http, specs, SEATS_ROUTE, load.duration_s * 3 + 60)
        merged.append(result)
        left -= len(result["latencies"])
    misses = await counter(http, nodes, "bookcluster_seat_cache_lookups_total",
                           result="miss") - misses0
    elapsed = sum(r["elapsed_s"] for r in merged)
    total = {"elapsed_s": elapsed, "latencies": [x for r in merged for x in r["latencies"]],
             "bytes": sum(r["bytes"] for r in merged),
             "statuses": dict(sum((Counter(r["statuses"]) for r in merged), Counter())),
             "errors": dict(sum((Counter(r["errors"]) for r in merged), Counter())),
             "exhausted": False, "processes": load.procs,
             "server_mean_ms": _mean([r["server_mean_ms"] for r in merged]),
             "cpu": merge_cpu([r["cpu"] for r in merged], elapsed)}
    reads = len(total["latencies"])
    return {**report(total, "200"), "rounds": len(merged), "cache_misses": int(misses),
            "miss_share": round(misses / reads, 3) if reads else None}


def merge_cpu(parts: list[dict[str, Any]], elapsed_s: float) -> dict[str, Any]:
    used: Counter[str] = Counter()
    for part in parts:
        used.update(part["cpu_s"])
    total = sum(used.values())
    cores = os.cpu_count() or 1
    return {"cpu_s": {k: round(v, 2) for k, v in used.items()},
            "busy_share_of_machine": round(total / (elapsed_s * cores), 3) if elapsed_s else None,
            "share": {k: round(v / total, 3) if total else None for k, v in used.items()}}


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present) / len(present), 3) if present else None
