"""The peer's load shape, and the peer's published figures to hold ours against.

The peer is the public FastAPI + SQLAlchemy booking backend that seed 001
describes; it is not vendored. Its figures below were measured side by side with
bookcluster in one session on this project's 2-core machine, in its own load
shape: 64 clients, 20 s, 2-seat holds on 1,000-seat shows, writes sent to home
nodes (source: `../shared/PERFORMANCE.md`, "Side by side with the seed-001
backend", 2026-12-06/07, quoted in issue 22). Ours run in exactly that shape
(`--peer-clients`, `--peer-duration`), on the bench catalog's 1,000-seat shows:

- holds: 2-seat holds of random free seats, each by a fresh user, sent to a node
  of the show's home region; rate, p50/p99, whole-machine CPU per hold (the
  machine's busy time, whoever used it: as the peer's was measured) and cluster
  CPU per hold (every process group of ours: nodes, Redis, PostgreSQL, workers,
  with what the phase left the workers);
- flows: hold -> pay (an intent at the gateway simulator, captured at once) ->
  confirm, one booking after the other per client, same clients and shows: sold
  bookings per second, and the CPU per booking of the whole cluster (every job a
  sale causes included, waited out and priced), with the backlog over time and
  the workers' drain rate next to the confirm answer rate (`drain.py`);
- seat maps: the same number of readers on one 1,000-seat show, from nodes of
  their own region.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import aiohttp

from . import log, phases
from .backlog import Backlog, Settle
from .drain import DrainSampler, drain_summary
from .local import BenchCluster
from .phases import Load, SeatPool

SOURCE = ("../shared/PERFORMANCE.md 'Side by side with the seed-001 backend' "
          "(2026-12-06/07, quoted in issue 22): the FastAPI + SQLAlchemy backend of seed "
          "001, same machine, same load shape")
PEER = {"holds_per_s": 443.0, "machine_cpu_ms_per_hold": 4.50, "flows_per_s": 193.0,
        "seat_map_per_s": 132.0, "seat_map_p99_ms": 1512.0}
CLIENTS = 64
DURATION_S = 20.0
SEATS = 2
SHOW_SEATS = 1000
# Seats set aside per second of the phase: more than this machine holds (2 seats a
# hold, ~1,500 holds/s at most) and sells (~700 bookings/s).
HOLD_SEATS_PER_S = 3000
FLOW_SEATS_PER_S = 1400


def machine_ms_per_op(phase: dict[str, Any]) -> float | None:
    busy = (phase.get("cpu") or {}).get("machine_busy_s")
    tail = phase.get("after_load") or {}
    if busy is None or not phase.get("ok"):
        return None
    # the workers' tail is ours too: priced per group, net of idle
    extra = sum(tail.get("cpu_s", {}).values())
    return round((float(busy) + extra) * 1000 / int(phase["ok"]), 3)


def without_gateway(phase: dict[str, Any]) -> float | None:
    """Cluster CPU per op, less the gateway simulator (it stands in for the bank)."""
    per = phase.get("cpu_ms_per_op") or {}
    if "cluster" not in per:
        return None
    return round(float(per["cluster"]) - float(per.get("gateway", 0.0)), 3)


def _take(cluster: BenchCluster, pool: SeatPool, seats: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    per_region = max(SEATS * 8, seats // len(cluster.topology.regions))
    for region in cluster.topology.regions:
        out.update(pool.take(region, per_region))
    return out


async def peer_phases(cluster: BenchCluster, http: aiohttp.ClientSession, load: Load,
                      pool: SeatPool, settle: Settle | None, backlog: Backlog | None,
                      clients: int, duration_s: float) -> dict[str, Any]:
    shape = replace(load, hold_clients=clients, read_clients=clients, duration_s=duration_s)
    sizes = {len(cluster.seats_of(s)) for s in cluster.shows()}
    out: dict[str, Any] = {"clients": clients, "duration_s": duration_s, "seats": SEATS,
                           "show_seats": sorted(sizes), "route": "direct", "peer": PEER,
                           "peer_source": SOURCE}
    hold_pool = _take(cluster, pool, int(HOLD_SEATS_PER_S * duration_s))
    flow_pool = _take(cluster, pool, int(FLOW_SEATS_PER_S * duration_s))
    hot = cluster.shows(list(cluster.topology.regions)[0])[-1]
    # Unmeasured warm-up to any node (pools grow, statements are prepared), then the
    # workers' idle CPU, which the priced tails are net of.
    warm = replace(shape, duration_s=max(0.2, duration_s / 10),
                   max_requests=min(load.max_requests, 2000))
    log(f"   warm-up: {warm.duration_s:g} s of hold -> pay -> confirm flows, not measured")
    await phases.flows(cluster, http, warm, _take(cluster, pool, 6000), "any")
    if settle is not None:
        await settle.wait_empty()
        out["idle_cpu_ms_per_s"] = await settle.idle_rates(max(0.5, duration_s / 10))
    log(f"P  peer shape: {clients} clients, {duration_s:g} s, {SEATS}-seat holds on shows of "
        f"{'/'.join(map(str, sorted(sizes)))} seats, sent direct")
    out["holds"], _ = await phases.holds(cluster, http, shape, hold_pool, "direct", settle,
                                         seats=(SEATS, SEATS))
    out["holds"]["machine_cpu_ms_per_op"] = machine_ms_per_op(out["holds"])
    log(f"   holds: {out['holds']['ok_per_s']:,}/s, p50 {out['holds']['p50_ms']} / p99 "
        f"{out['holds']['p99_ms']} ms; CPU ms per hold: machine "
        f"{out['holds']['machine_cpu_ms_per_op']}, cluster "
        f"{out['holds']['cpu_ms_per_op'].get('cluster')}")
    log(f"P  peer shape: hold -> pay -> confirm flows, {clients} clients")
    sampler = DrainSampler(cluster, http, backlog) if backlog is not None else None
    if sampler is not None:
        await sampler.__aenter__()
    try:
        out["flows"] = await phases.flows(cluster, http, shape, flow_pool, "direct", settle,
                                          seats=(SEATS, SEATS))
    finally:
        samples = await sampler.stop() if sampler is not None else []
    flows = out["flows"]
    flows["machine_cpu_ms_per_op"] = machine_ms_per_op(flows)
    flows["cluster_ms_per_booking"] = without_gateway(flows)
    if samples and flows.get("window_at"):
        flows["drain"] = drain_summary(samples, tuple(flows["window_at"]), flows["ok"],
                                       flows["elapsed_s"], "bookings")
    log(f"   flows: {flows['ok_per_s']:,} bookings/s, p99 {flows['p99_ms']} ms per flow; "
        f"cluster CPU per booking {flows['cluster_ms_per_booking']} ms (gateway excluded)"
        + (f"; workers drain {flows['drain']['drained_per_s']}/s" if "drain" in flows else ""))
    log(f"P  peer shape: seat map of a {len(cluster.seats_of(hot))}-seat show, {clients} "
        "readers")
    out["seat_map"] = await phases.hot_reads(cluster, http, shape, hot)
    log(f"   {out['seat_map']['ok_per_s']:,} req/s, p99 {out['seat_map']['p99_ms']} ms")
    out["vs_peer"] = vs_peer(out)
    return out


def _ratio(ours: float | None, theirs: float) -> float | None:
    return None if ours is None else round(ours / theirs, 3)


def vs_peer(out: dict[str, Any]) -> dict[str, float | None]:
    holds, flows, reads = out.get("holds") or {}, out.get("flows") or {}, \
        out.get("seat_map") or {}
    return {"holds_per_s": _ratio(holds.get("ok_per_s"), PEER["holds_per_s"]),
            "machine_cpu_per_hold": _ratio(holds.get("machine_cpu_ms_per_op"),
                                           PEER["machine_cpu_ms_per_hold"]),
            "flows_per_s": _ratio(flows.get("ok_per_s"), PEER["flows_per_s"]),
            "seat_map_per_s": _ratio(reads.get("ok_per_s"), PEER["seat_map_per_s"]),
            "seat_map_p99": _ratio(reads.get("p99_ms"), PEER["seat_map_p99_ms"])}
