"""The measured phases against a running bench cluster.

Each throughput phase runs in the load generator processes (`loadgen.py`) and
reports what the client saw (successes per second, p50/p99 of all answers,
statuses, error codes), what the nodes measured themselves (mean of
`bookcluster_http_request_seconds` over the phase), the state of their seat
caches before and after, and where the CPU went (`cpu.py`: every process group,
the load generators, the bench itself, the machine's unaccounted busy share)
from the moment the load generators start until the last one answered. With
workers, the work a phase leaves them (a confirm's ticket and mail jobs, its
mirror rows) is waited out and priced too (`backlog.py`). Every write carries
its own user's token; confirms use payments the gateway captured
(`payments.py`).

Writes go `direct` (to a node of the show's home region, as a client that follows
the `X-Bookcluster-Home-Nodes` header does), `forwarded` (to nodes of the other
regions, which forward them home) or to `any` node (warm-up).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from bookcluster.booking import ids
from bookcluster.local.supervisor import Child
from bookcluster.seats import keys
from bookcluster.stores.connections import make_redis

from . import loadgen
from .backlog import Settle
from .cpu import Snapshot, cpu_groups, service_cpu_s, snapshot, usage
from .local import BenchCluster, node_figures
from .payments import Held, held
from .stats import summarize
from .tokens import bearer, token_for

HOLD_ROUTE = ("/booking/seats/{show_id}/lock", "POST")
CONFIRM_ROUTE = ("/booking/booking/{booking_id}/confirm", "POST")
SEATS_ROUTE = ("/shows/{show_id}/seats", "GET")
ROUTES = ("direct", "forwarded", "any")


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
        self.cluster = cluster
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

    def whole_shows(self, region: str, count: int) -> list[int]:
        """`count` shows of `region` nobody has taken a seat of, taken out of the pool."""
        whole = [(show, free) for show, free in self.left[region]
                 if len(free) == len(self.cluster.seats_of(show))][:count]
        if len(whole) < count:
            raise RuntimeError(f"the bench catalog has too few whole shows in {region}")
        for entry in whole:
            self.left[region].remove(entry)
        return [show for show, _ in whole]

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


def entry_nodes(cluster: BenchCluster, home: str, route: str) -> list[str]:
    """Where a client sends a write of a show homed in `home`."""
    if route == "direct":
        return cluster.nodes(home)
    if route == "forwarded":
        return [n for r in cluster.topology.regions if r != home for n in cluster.nodes(r)]
    return cluster.nodes()


def _figure_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    def delta(key: str) -> dict[str, int]:
        return {k: v for k, v in (Counter(after[key]) - Counter(before[key])).items() if v}

    served = after["served"] - before["served"]
    return {"server_mean_ms": round((after["latency_s"] - before["latency_s"]) / served * 1000,
                                    3) if served else None,
            # requests of the route all nodes served: a forwarded one counts twice
            "node_requests": int(served),
            "cache": {"cached_shows_before": sum(before["cached_shows"]),
                      "cached_shows_after": sum(after["cached_shows"]),
                      "nodes_caching_after": sum(1 for n in after["cached_shows"] if n),
                      "subscribed_shows_before": before["subscribed_shows"],
                      "subscribed_shows_after": after["subscribed_shows"],
                      "lookups": delta("lookups")},
            "node_holds": delta("holds"), "writes_shed": delta("shed")}


async def measured(cluster: BenchCluster, http: aiohttp.ClientSession,
                   specs: list[dict[str, Any]], route: tuple[str, str] | None,
                   timeout_s: float, extra_pids: dict[str, list[int]] | None = None,
                   settle: Settle | None = None) -> dict[str, Any]:
    """Run the specs in load generator processes; add server-side means, cache state and
    CPU (with `settle`: also the work left to the workers, until it is done)."""
    nodes = cluster.nodes()
    groups = {**cpu_groups(cluster), **(extra_pids or {})}
    before = await node_figures(http, nodes, route)
    marks: dict[str, Snapshot] = {}
    result = await loadgen.run_processes(
        specs, timeout_s, started=lambda: marks.setdefault("start", snapshot(groups)),
        ended=lambda: marks.setdefault("end", snapshot(groups)))
    result["cpu"] = usage(marks["start"], marks["end"], result["client_cpu_s"])
    result["window_at"] = (marks["start"].at, marks["end"].at)  # perf_counter
    if settle is not None:
        result["after_load"] = await settle.after(marks["end"])
    result.update(_figure_delta(before, await node_figures(http, nodes, route)))
    return result


def cpu_ms_per_op(result: dict[str, Any], ops: int) -> dict[str, float]:
    """CPU ms per operation of each group, the work left to the workers included, and
    `cluster` (every group but the load generators and the bench)."""
    if not ops or "cpu" not in result:
        return {}
    used = Counter(result["cpu"]["cpu_s"])
    used.update((result.get("after_load") or {}).get("cpu_s", {}))
    out = {k: round(v * 1000 / ops, 3) for k, v in used.items()}
    out["cluster"] = round(service_cpu_s(dict(used)) * 1000 / ops, 3)
    return out


def report(result: dict[str, Any], ok: str) -> dict[str, Any]:
    """What a phase publishes: `ok` answers per second, latency of every answer, CPU."""
    done = result["statuses"].get(ok, 0)
    tail = result.get("after_load")
    return {**summarize(result["latencies"], result["elapsed_s"]),
            "ok": done, "ok_per_s": round(done / result["elapsed_s"], 1),
            # answered and, with workers, also finished by them (their backlog drained)
            "settled_per_s": round(done / (result["elapsed_s"] + tail["tail_s"]), 1)
            if tail else None,
            "statuses": result["statuses"], "errors": result["errors"],
            "failures": result.get("failures", {}),
            "server_mean_ms": result.get("server_mean_ms"),
            "node_requests": result.get("node_requests"), "cpu": result.get("cpu"),
            "after_load": result.get("after_load"), "cache": result.get("cache"),
            "cpu_ms_per_op": cpu_ms_per_op(result, done),
            "exhausted": result["exhausted"], "processes": result["processes"],
            "window_at": result.get("window_at"),
            "bytes_per_answer": round(result.get("bytes", 0) / len(result["latencies"]))
            if result["latencies"] else None}


# -- 1a, 2: holds and confirms --------------------------------------------------------

def _write_specs(cluster: BenchCluster, load: Load, route: str, kind: str,
                 work: dict[str, list[Any]], group: Callable[[list[Any]], dict[str, Any]],
                 extra: Callable[[int], dict[str, Any]] = lambda _: {}) -> list[dict[str, Any]]:
    """One spec per load process `i` (plus `extra(i)`): its share of the clients and of
    `work` (per home region; `group` makes a group's entry of a share), each group sent to
    that region's entry nodes for `route`."""
    regions = list(cluster.topology.regions)
    return [{"kind": kind, "concurrency": clients, "duration_s": load.duration_s,
             "max_requests": cap, "seed": i, "warm_urls": _healthz(cluster.nodes()),
             "groups": [{"nodes": _rotate(entry_nodes(cluster, r, route), i * 7),
                         **group(work[r][i::load.procs])}
                        for r in regions if work[r][i::load.procs]], **extra(i)}
            for i, (clients, cap) in enumerate(zip(_share(load.hold_clients, load.procs),
                                                   _share(load.max_requests, load.procs),
                                                   strict=True))]


async def holds(cluster: BenchCluster, http: aiohttp.ClientSession, load: Load,
                pool: dict[int, list[str]], route: str, settle: Settle | None = None,
                seats: tuple[int, int] = (1, 4)) -> tuple[dict[str, Any], list[Held]]:
    """Holds of `seats` (1-4) random free seats of many shows, each by a fresh user,
    sent `route` (`ROUTES`). A client keeps to one home region's shows and their entry
    nodes."""
    result = await _hold_load(cluster, http, load, pool, route, settle, seats, "holds")
    return {**report(result, "201"), "route": route}, held(result["created"])


async def flows(cluster: BenchCluster, http: aiohttp.ClientSession, load: Load,
                pool: dict[int, list[str]], route: str, settle: Settle | None = None,
                seats: tuple[int, int] = (2, 2)) -> dict[str, Any]:
    """As `holds`, each hold then paid at the gateway and confirmed (`loadgen` kind
    `flows`): `ok` counts bookings sold; latency percentiles are of whole flows."""
    gateway = cluster.topology.payments
    assert gateway is not None, "the bench cluster runs the gateway simulator"
    result = await _hold_load(cluster, http, load, pool, route, settle, seats, "flows", {
        "gateway": {"url": f"http://{gateway.gateway.host}:{gateway.gateway.port}",
                    "api_key": cluster.topology.secrets.get("gateway_api_key")}})
    sold = len(result["created"])
    requests = report(result, "-")
    return {**requests, **summarize(result["flow_ms"], result["elapsed_s"]),
            "ok": sold, "ok_per_s": round(sold / result["elapsed_s"], 1),
            "settled_per_s": round(sold / (result["elapsed_s"] + result["after_load"]["tail_s"]),
                                   1) if result.get("after_load") else None,
            "cpu_ms_per_op": cpu_ms_per_op(result, sold), "route": route,
            "requests": {"count": requests["count"], "p50_ms": requests["p50_ms"],
                         "p99_ms": requests["p99_ms"]}}


async def _hold_load(cluster: BenchCluster, http: aiohttp.ClientSession, load: Load,
                     pool: dict[int, list[str]], route: str, settle: Settle | None,
                     seats: tuple[int, int], kind: str,
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    by_home = {r: sorted(s for s in pool if cluster.home_of(s) == r)
               for r in cluster.topology.regions}
    home = {s: r for r, shows in by_home.items() for s in shows}
    specs = _write_specs(cluster, load, route, kind, by_home,
                         lambda shows: {"pool": {str(s): pool[s] for s in shows},
                                        "region": home[shows[0]]},
                         lambda i: {"user": f"bench-{route}{i}", "seats": list(seats),
                                    "topology": str(cluster.topology.path),
                                    **(extra or {})})
    return await measured(cluster, http, specs, HOLD_ROUTE, load.duration_s * 3 + 60,
                          settle=settle)


async def confirms(cluster: BenchCluster, http: aiohttp.ClientSession, load: Load,
                   bookings: list[list[str]], route: str,
                   settle: Settle | None = None) -> dict[str, Any]:
    """`bookings`: [booking, owner's token, captured payment id] (`payments.pay`), each
    confirmed once, sent `route`."""
    by_home: dict[str, list[Any]] = {r: [] for r in cluster.topology.regions}
    for item in bookings:
        by_home[cluster.home_of(ids.booking_show(item[0]))].append(item)
    specs = _write_specs(cluster, load, route, "confirms", by_home,
                         lambda items: {"bookings": items})
    result = await measured(cluster, http, specs, CONFIRM_ROUTE, load.duration_s * 3 + 60,
                            settle=settle)
    return {**report(result, "200"), "route": route}


# -- 1b: everyone wants the same seat -------------------------------------------------

async def one_seat(cluster: BenchCluster, http: aiohttp.ClientSession, load: Load,
                   show: int, seat: str, users: str = "rush") -> dict[str, Any]:
    """`rush_clients` holds of one seat at the same moment, each by its own user
    (`users`-N), spread over every node (so most are forwarded); the show is in no seat
    cache before."""
    nodes = cluster.nodes()
    requests = [["POST", f"{nodes[j % len(nodes)]}/booking/seats/{show}/lock",
                 {"seat_ids": [seat]}, bearer(token_for(cluster.topology, f"{users}-{j}"))]
                for j in range(load.rush_clients)]
    specs = [{"kind": "burst", "concurrency": len(part), "duration_s": 60,
              "max_requests": len(part), "warm_urls": [
                  f"{nodes[j % len(nodes)]}/healthz" for j in range(i, len(requests),
                                                                    load.procs)],
              "requests": part}
             for i in range(load.procs) if (part := requests[i::load.procs])]
    result = await measured(cluster, http, specs, HOLD_ROUTE, 120)
    answers = result["results"]
    by_status = Counter(loadgen.answer_kind(a) for a in answers)
    other = Counter(f"{a['status']} {a['error']}" for a in answers
                    if a["status"] != 201 and not (a["status"] == 409
                                                   and a["error"] == "seats_unavailable"))
    return {**summarize([a["ms"] for a in answers], result["elapsed_s"]),
            "clients": load.rush_clients, "show_id": show, "seat_id": seat,
            "created_201": sum(a["status"] == 201 for a in answers),
            "clean_409": sum(a["status"] == 409 and a["error"] == "seats_unavailable"
                             for a in answers),
            "answers": dict(by_status.most_common()), "other": dict(other),
            "server_mean_ms": result["server_mean_ms"], "cpu": result["cpu"],
            "cache": result["cache"], "node_holds": result["node_holds"],
            "writes_shed": result["writes_shed"]}


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
    """A RESET change per show on its home master's region channel (every node hears
    it): every node forgets those shows."""
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
    started, left = time.perf_counter(), load.max_requests
    while left > 0 and (not merged or time.perf_counter() - started < load.duration_s):
        await invalidate(cluster, shows)
        batch = pairs[:left]
        specs = _read_specs(load, [[]], _healthz(nodes), urls=batch, max_requests=len(batch))
        result = await measured(cluster, http, specs, SEATS_ROUTE, load.duration_s * 3 + 60)
        merged.append(result)
        left -= len(result["latencies"])
    elapsed = sum(r["elapsed_s"] for r in merged)
    misses = sum(r["cache"]["lookups"].get("miss", 0) for r in merged)
    total = {"elapsed_s": elapsed, "latencies": [x for r in merged for x in r["latencies"]],
             "bytes": sum(r["bytes"] for r in merged),
             "statuses": dict(sum((Counter(r["statuses"]) for r in merged), Counter())),
             "errors": dict(sum((Counter(r["errors"]) for r in merged), Counter())),
             "failures": dict(sum((Counter(r["failures"]) for r in merged), Counter())),
             "exhausted": False, "processes": load.procs,
             "server_mean_ms": _mean([r["server_mean_ms"] for r in merged]),
             "cpu": merge_cpu([r["cpu"] for r in merged]), "cache": merged[0]["cache"]}
    reads = len(total["latencies"])
    return {**report(total, "200"), "rounds": len(merged), "cache_misses": int(misses),
            "miss_share": round(misses / reads, 3) if reads else None}


def merge_cpu(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Several measured windows as one: CPU seconds add up, shares are time-weighted."""
    used: Counter[str] = Counter()
    for part in parts:
        used.update(part["cpu_s"])
    window = sum(p["window_s"] for p in parts)
    total = sum(used.values())

    def weighted(key: str) -> float | None:
        if not window or any(p[key] is None for p in parts):
            return None
        return round(sum(p[key] * p["window_s"] for p in parts) / window, 3)

    return {"cpu_s": {k: round(v, 3) for k, v in used.items()}, "window_s": round(window, 3),
            "machine_busy_share": weighted("machine_busy_share"),
            "accounted_share": weighted("accounted_share"),
            "unaccounted_share": weighted("unaccounted_share"),
            "share": {k: round(v / total, 3) if total else None for k, v in used.items()}}


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present) / len(present), 3) if present else None
