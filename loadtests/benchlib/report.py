"""The bench's verdicts: ratios to the raw limits and between runs, targets, bottleneck.

`writes` holds one entry per node count ("5", "1"), the first being the one every
other phase ran on; the issue's targets are about that first topology.
"""

from __future__ import annotations

from typing import Any

from .stats import ratio

# Issue 22's targets (CPU ms per operation unless said).
CLUSTER_MS_PER_HOLD = 1.2
NODE_MS_PER_HOLD = 0.3
FORWARDED_VS_DIRECT = 1.5  # cluster CPU per hold
CLUSTER_MS_PER_BOOKING = 4.0  # hold + pay + confirm + every job it causes
HOLDS_VS_PEER = 2.5
MACHINE_CPU_VS_PEER = 0.4
SEAT_MAPS_VS_PEER = 50
SEAT_MAP_P99_MS = 20
SHARE_OF_STORE_CEILING = 0.5
DRAIN_SLACK = 0.95  # drain rate vs answer rate: two samples 0.5 s apart bound the window
ONE_SEAT_P99_MS = 250
# Issue 11's, still drawn on the chart: cluster CPU per direct confirm.
CLUSTER_MS_PER_CONFIRM = 2.5
CPU_BOUND = 0.8  # machine busier than this: its cores are what runs out
NAMES = {"nodes": "app-node CPU (Python)", "postgres": "PostgreSQL",
         "redis masters": "Redis masters", "redis replicas": "Redis replicas",
         "client": "the load generator", "wan proxy": "the WAN proxy", "workers": "workers",
         "gateway": "the payment gateway simulator", "bench": "the bench process"}


def get(data: Any, *path: Any) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def topologies(results: dict[str, Any]) -> list[str]:
    """Node counts of the write runs, the main one first."""
    return [str(n) for n in results["config"]["nodes_per_region"]
            if str(n) in results["writes"]]


def main_writes(results: dict[str, Any]) -> dict[str, Any]:
    tops = topologies(results)
    return results["writes"][tops[0]] if tops else {}


def per_op(phase: dict[str, Any] | None, group: str) -> float | None:
    return get(phase, "cpu_ms_per_op", group)


def lower_raw_limit(results: dict[str, Any]) -> tuple[float | None, str | None]:
    raw = results.get("raw") or {}
    redis_limit = get(raw, "redis_hold", "per_s")
    pg_limit = get(raw, "pg", "hold_write", "per_s")
    limits = [(v, n) for v, n in ((redis_limit, "redis hold script"),
                                  (pg_limit, "pg hold write")) if v]
    return min(limits) if limits else (None, None)


def store_ceilings(results: dict[str, Any]) -> dict[str, Any]:
    """Ops/s if the machine's cores did nothing but the stores' own work, priced by the
    raw limits of this run (server CPU per op alone): a hold is the HOLD script plus
    the PostgreSQL hold write; a confirm is its PostgreSQL transaction."""
    raw = results.get("raw") or {}
    cores = results["machine"].get("nproc") or 1
    redis_ms = get(raw, "redis_hold", "server_cpu_ms_per_op")
    hold_ms = get(raw, "pg", "hold_write", "server_cpu_ms_per_op")
    confirm_ms = get(raw, "pg", "confirm", "server_cpu_ms_per_op")
    hold = (redis_ms or 0.0) + hold_ms if hold_ms else None
    return {"hold_store_cpu_ms": round(hold, 4) if hold else None,
            "holds_per_s": round(cores * 1000 / hold, 1) if hold else None,
            "confirm_store_cpu_ms": confirm_ms,
            "confirms_per_s": round(cores * 1000 / confirm_ms, 1) if confirm_ms else None,
            "cores": cores}


def peer_holds(results: dict[str, Any]) -> dict[str, Any] | None:
    """Direct holds in the peer's shape if that ran, else the writes' direct holds."""
    return get(results, "peer", "holds") or main_writes(results).get("holds_direct")


def derive(results: dict[str, Any]) -> dict[str, Any]:
    writes, reads = main_writes(results), results.get("reads") or {}
    raw = results.get("raw") or {}
    lower, lower_name = lower_raw_limit(results)
    direct, forwarded = writes.get("holds_direct"), writes.get("holds_forwarded")
    ratios: dict[str, Any] = {
        "hold_vs_lower_raw_limit": ratio(get(direct, "ok_per_s"), lower),
        "lower_raw_limit": lower_name,
        "confirm_vs_pg_confirm_limit": ratio(get(writes, "confirms_direct", "ok_per_s"),
                                             get(raw, "pg", "confirm", "per_s")),
        "hot_reads_vs_trivial": ratio(get(reads, "reads_hot", "ok_per_s"),
                                      get(reads, "reads_trivial", "ok_per_s")),
        "cold_reads_vs_trivial": ratio(get(reads, "reads_cold", "ok_per_s"),
                                       get(reads, "reads_trivial", "ok_per_s")),
        "forwarded_vs_direct_node_cpu_per_hold": ratio(per_op(forwarded, "nodes"),
                                                       per_op(direct, "nodes")),
        "forwarded_vs_direct_holds_per_s": ratio(get(forwarded, "ok_per_s"),
                                                 get(direct, "ok_per_s")),
        # the stores' CPU per hold in the cluster against the same work alone (the floor)
        "redis_master_cpu_per_hold_vs_raw": ratio(
            per_op(direct, "redis masters"), get(raw, "redis_hold", "server_cpu_ms_per_op")),
        "postgres_cpu_per_hold_vs_raw": ratio(
            per_op(direct, "postgres"), get(raw, "pg", "hold_write", "server_cpu_ms_per_op")),
        "postgres_cpu_per_confirm_vs_raw": ratio(
            per_op(writes.get("confirms_direct"), "postgres"),
            get(raw, "pg", "confirm", "server_cpu_ms_per_op")),
        "vs_targets": {
            "cluster_cpu_per_direct_hold": ratio(per_op(direct, "cluster"),
                                                 CLUSTER_MS_PER_HOLD),
            "node_cpu_per_direct_hold": ratio(per_op(direct, "nodes"), NODE_MS_PER_HOLD),
            "node_cpu_per_forwarded_hold": ratio(per_op(forwarded, "nodes"),
                                                 NODE_MS_PER_HOLD),
            "cluster_cpu_per_direct_confirm": ratio(
                per_op(writes.get("confirms_direct"), "cluster"), CLUSTER_MS_PER_CONFIRM)},
        "by_topology": by_topology(results), **flows(results)}
    ceilings = store_ceilings(results)
    ratios["store_ceiling"] = ceilings
    ratios["holds_vs_store_ceiling"] = ratio(get(peer_holds(results), "ok_per_s"),
                                             ceilings["holds_per_s"])
    ratios["confirms_vs_store_ceiling"] = ratio(
        get(writes, "confirms_direct", "ok_per_s"), ceilings["confirms_per_s"])
    ratios["forwarded_vs_direct_cluster_cpu_per_hold"] = ratio(per_op(forwarded, "cluster"),
                                                               per_op(direct, "cluster"))
    return {"ratios": ratios, "bottleneck": bottleneck(results),
            "targets": targets(results, ratios), "token_verify": token_share(results)}


def flows(results: dict[str, Any]) -> dict[str, Any]:
    """Hold + confirm flows per second, both sent direct: the two phases' rates combined
    (one after the other), and what the machine's cores allow at the CPU both cost
    with the workers' share and the load generator (if nothing else ran)."""
    writes = main_writes(results)
    hold, confirm = writes.get("holds_direct"), writes.get("confirms_direct")
    rates = [get(hold, "ok_per_s"), get(confirm, "ok_per_s")]
    per_flow = [per_op(hold, "cluster"), per_op(confirm, "cluster"), per_op(hold, "client"),
                per_op(confirm, "client")]
    cores = results["machine"].get("nproc") or 1
    return {"flows_per_s_phases": round(1 / sum(1 / r for r in rates), 1)
            if all(rates) else None,
            "flows_per_s_cpu_bound": round(cores * 1000 / sum(per_flow), 1)
            if all(v is not None for v in per_flow) and sum(per_flow) else None}


def by_topology(results: dict[str, Any]) -> dict[str, Any]:
    """Each other node count against the main one: rates and CPU per operation."""
    tops = topologies(results)
    if len(tops) < 2:
        return {}
    main = results["writes"][tops[0]]
    out = {}
    for top in tops[1:]:
        other = results["writes"][top]
        out[f"{top}_vs_{tops[0]}"] = {
            f"{key}_{what}": ratio(value(other.get(key)), value(main.get(key)))
            for key in ("holds_direct", "holds_forwarded", "confirms_direct",
                        "confirms_forwarded")
            for what, value in (("per_s", lambda p: get(p, "ok_per_s")),
                                ("cluster_cpu", lambda p: per_op(p, "cluster")),
                                ("node_cpu", lambda p: per_op(p, "nodes")))}
    return out


def token_share(results: dict[str, Any]) -> dict[str, Any]:
    """One token verification against the node CPU a hold and a confirm cost (a write
    that enters at another region's node is verified there and again at home)."""
    verify_us = get(results, "token_verify", "identity_us")
    writes = main_writes(results)
    per = {op: per_op(writes.get(key), "nodes")
           for op, key in (("hold", "holds_direct"), ("confirm", "confirms_direct"))}
    return {f"share_of_node_cpu_per_{op}": ratio(verify_us / 1000, ms) if verify_us else None
            for op, ms in per.items()}


def bottleneck(results: dict[str, Any]) -> dict[str, Any]:
    """Where a direct hold's cost goes. On a CPU-bound machine: the group that burns the
    most CPU per hold; otherwise the slowest stage, timed alone at the same concurrency."""
    holds = main_writes(results).get("holds_direct") or {}
    stages = get(results, "raw", "stages") or {}
    per_hold = {k: v for k, v in (holds.get("cpu_ms_per_op") or {}).items() if k != "cluster"}
    busy = get(holds, "cpu", "machine_busy_share")
    total_ms = holds.get("mean_ms")
    redis_ms = get(stages, "redis_script", "mean_ms")
    pg_ms = get(stages, "pg_write", "mean_ms")
    shares: dict[str, float] = {}
    if total_ms and redis_ms is not None and pg_ms is not None:
        shares = {"Redis script": min(1.0, redis_ms / total_ms),
                  "PostgreSQL write": min(1.0, pg_ms / total_ms)}
    servers = {k: v for k, v in per_hold.items() if k not in ("client", "bench")}
    if servers and busy is not None and busy >= CPU_BOUND:
        top = max(servers, key=lambda k: servers[k])
        cpu_total = sum(servers.values())
        verdict = (f"direct hold: {NAMES.get(top, top)} is the bottleneck "
                   f"({per_hold[top] / cpu_total * 100:.0f}% of the cluster's CPU per hold; "
                   f"machine {busy * 100:.0f}% busy); CPU ms per hold: " + ", ".join(
                       f"{k} {v:.2f}" for k, v in sorted(per_hold.items(),
                                                         key=lambda kv: -kv[1])))
    elif shares:
        stage = max(shares, key=lambda k: shares[k])
        verdict = (f"direct hold: the {stage} is the bottleneck ({shares[stage] * 100:.0f}% "
                   f"of a hold's time; machine {pct(busy)} busy)")
    else:
        verdict = "direct hold: not measured"
    if shares:
        verdict += (f"; timed alone from Python at {stages.get('concurrency')} clients: Redis "
                    f"script {redis_ms:.1f} ms, PostgreSQL write {pg_ms:.1f} ms, mean hold "
                    f"{total_ms:.1f} ms")
    return {"verdict": verdict, "cpu_ms_per_hold": per_hold,
            "busy_share_of_machine": busy,
            "stage_time_shares": {k: round(v, 3) for k, v in shares.items()}}


def times(v: float) -> str:
    return f"{v:.2f}x"


def _ms(v: float) -> str:
    return f"{v:.2f} ms"


def targets(results: dict[str, Any], ratios: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 22's targets, each with the measured value and met / not met / not measured;
    then the remote-cache delay and the one-seat answers as before."""
    writes = main_writes(results)
    main = topologies(results)[0] if topologies(results) else "?"
    peer = results.get("peer") or {}
    vs = peer.get("vs_peer") or {}
    holds = peer_holds(results)
    where = "peer shape" if peer.get("holds") else f"{main}/region direct holds"
    flows = peer.get("flows") or {}
    drain = flows.get("drain") or {}
    answered = drain.get("answered_per_s")
    ceil = ratios["store_ceiling"]
    rows = [
        _target(f"holds >= {HOLDS_VS_PEER}x the peer's holds/s (peer shape)",
                vs.get("holds_per_s"), lambda v: v >= HOLDS_VS_PEER,
                lambda v: f"{times(v)} ({get(peer, 'holds', 'ok_per_s')}/s)"),
        _target(f"whole-machine CPU per hold <= {MACHINE_CPU_VS_PEER}x the peer's (peer shape)",
                vs.get("machine_cpu_per_hold"), lambda v: v <= MACHINE_CPU_VS_PEER,
                lambda v: f"{times(v)} ({get(peer, 'holds', 'machine_cpu_ms_per_op')} ms)"),
        _target(f"cluster CPU per direct hold <= {CLUSTER_MS_PER_HOLD} ms ({where})",
                per_op(holds, "cluster"), lambda v: v <= CLUSTER_MS_PER_HOLD, _ms),
        _target(f"node CPU per direct hold <= {NODE_MS_PER_HOLD} ms ({where})",
                per_op(holds, "nodes"), lambda v: v <= NODE_MS_PER_HOLD, _ms),
        _target(f"hold forwarded <= {FORWARDED_VS_DIRECT}x direct, cluster CPU ({main}/region)",
                ratios["forwarded_vs_direct_cluster_cpu_per_hold"],
                lambda v: v <= FORWARDED_VS_DIRECT, times),
        _target(f"booking (hold + pay + confirm + its jobs) cluster CPU <= "
                f"{CLUSTER_MS_PER_BOOKING} ms (peer shape; gateway simulator excluded"
                f"{'' if results['config']['workers'] else '; WORKERS OFF: jobs not included'})",
                flows.get("cluster_ms_per_booking"), lambda v: v <= CLUSTER_MS_PER_BOOKING, _ms),
        _target("workers drain >= confirms answered, bookings/s (peer-shape flows)",
                drain.get("drained_per_s"),
                lambda v: v >= DRAIN_SLACK * (answered or 0),
                lambda v: f"{v:g}/s drained vs {answered}/s answered (met at >= "
                f"{DRAIN_SLACK:.0%}); backlog peak {drain.get('backlog_peak')}"),
        _target(f"holds >= {SHARE_OF_STORE_CEILING:.0%} of the store-only ceiling "
                f"({ceil['holds_per_s']}/s here; {where})",
                ratios["holds_vs_store_ceiling"], lambda v: v >= SHARE_OF_STORE_CEILING, pct),
        _target(f"confirms >= {SHARE_OF_STORE_CEILING:.0%} of the store-only ceiling "
                f"({ceil['confirms_per_s']}/s here; {main}/region direct confirms)",
                ratios["confirms_vs_store_ceiling"], lambda v: v >= SHARE_OF_STORE_CEILING,
                pct),
        _target(f"seat-map reads >= {SEAT_MAPS_VS_PEER}x the peer's req/s (peer shape)",
                vs.get("seat_map_per_s"), lambda v: v >= SEAT_MAPS_VS_PEER,
                lambda v: f"{v:.1f}x ({get(peer, 'seat_map', 'ok_per_s')}/s)"),
        _target(f"seat-map p99 < {SEAT_MAP_P99_MS} ms (peer shape)",
                get(peer, "seat_map", "p99_ms"), lambda v: v < SEAT_MAP_P99_MS,
                lambda v: f"{v:.1f} ms"),
    ]
    for delay, run in sorted(results["runs"].items(), key=lambda kv: int(kv[0])):
        pairs = get(run, "change_delay", "pairs") or {}
        cross = [p["from_ts"]["p99_ms"] for p in pairs.values()
                 if p["home"] != p["reader"] and p["from_ts"]["p99_ms"] is not None]
        lost = sum(p["expected"] - p["received"] - p.get("via_snapshot", 0)
                   for p in pairs.values())
        resynced = sum(p.get("via_snapshot", 0) for p in pairs.values())
        limit = 50 + int(delay)
        worst = max(cross) if cross else None
        rows.append(_target(
            f"remote cache reflects a change within {limit} ms at p99 (WAN {delay} ms)",
            worst, lambda v, lim=limit, lost=lost: v < lim and lost == 0,
            lambda v, lost=lost, resynced=resynced: f"worst pair p99 {v:.1f} ms"
            + (f", {resynced} holds learnt from a fresh snapshot" if resynced else "")
            + (f", {lost} holds never shown" if lost else "")))
    for top in topologies(results):
        rush = results["writes"][top].get("one_seat") or {}
        rows.append(_target(
            f"{rush.get('clients', '?')} clients on one seat ({top}/region): one 201, every "
            "other answer a clean 409", rush.get("created_201"),
            lambda v, r=rush: v == 1 and r.get("clean_409") == r.get("clients", 0) - 1,
            lambda v, r=rush: ", ".join(f"{n} x {k}" for k, n in r.get("answers", {}).items())))
    rush = writes.get("one_seat") or {}
    rows.append(_target(f"one-seat p99 < {ONE_SEAT_P99_MS} ms ({main}/region)",
                        rush.get("p99_ms"), lambda v: v < ONE_SEAT_P99_MS,
                        lambda v: f"{v:.1f} ms"))
    return rows + best_rush_targets(results)


def best_rush_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 23's rush: best available sells the show out, no seat is held twice in
    either rush, and it is refused less often than picking from the seat map."""
    rush = results.get("best_rush") or {}
    best, pick = rush.get("best") or {}, rush.get("pick") or {}
    clients = rush.get("clients", "?")
    return [
        _target(f"best available sells out one show ({clients} clients), no seat left",
                best.get("seats_left"), lambda v: v == 0,
                lambda v: f"{best.get('seats_held')} seats held in {best.get('sell_out_s')} s,"
                f" {v} left"),
        _target("no seat held twice in either rush (PostgreSQL)",
                (best.get("seats_held_twice") or 0) + (pick.get("seats_held_twice") or 0)
                if best and pick else None, lambda v: v == 0, lambda v: f"{v} seats"),
        _target("best available refuses a smaller share of holds than picking",
                best.get("refused_share"),
                lambda v: v < (pick.get("refused_share") or 0) if pick else False,
                lambda v: f"{v * 100:.1f}% vs {(pick.get('refused_share') or 0) * 100:.1f}%"),
    ]


def _target(name: str, value: Any, check: Any, show: Any) -> dict[str, Any]:
    if value is None:
        return {"target": name, "value": None, "met": None, "shown": "not measured"}
    return {"target": name, "value": value, "met": bool(check(value)), "shown": show(value)}
