"""The bench's verdicts: ratios to the raw limits and between runs, targets, bottleneck.

`writes` holds one entry per node count ("5", "1"), the first being the one every
other phase ran on; the issue's targets are about that first topology.
"""

from __future__ import annotations

from typing import Any

from .stats import ratio

# Issue 11's targets, CPU ms per operation.
CLUSTER_MS_PER_HOLD = 1.2
NODE_MS_PER_HOLD = 0.5
CLUSTER_MS_PER_CONFIRM = 2.5
ONE_SEAT_P99_MS = 250
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


def _ms(v: float) -> str:
    return f"{v:.2f} ms"


def targets(results: dict[str, Any], ratios: dict[str, Any]) -> list[dict[str, Any]]:
    writes, reads = main_writes(results), results.get("reads") or {}
    main = topologies(results)[0] if topologies(results) else "?"
    direct, forwarded = writes.get("holds_direct"), writes.get("holds_forwarded")
    confirm = writes.get("confirms_direct")
    rows = [
        _target(f"cluster CPU per direct hold <= {CLUSTER_MS_PER_HOLD} ms ({main}/region)",
                per_op(direct, "cluster"), lambda v: v <= CLUSTER_MS_PER_HOLD, _ms),
        _target(f"node CPU per direct hold <= {NODE_MS_PER_HOLD} ms ({main}/region)",
                per_op(direct, "nodes"), lambda v: v <= NODE_MS_PER_HOLD, _ms),
        _target(f"node CPU per forwarded hold <= {NODE_MS_PER_HOLD} ms ({main}/region)",
                per_op(forwarded, "nodes"), lambda v: v <= NODE_MS_PER_HOLD, _ms),
        _target(f"cluster CPU per direct confirm, workers included, <= "
                f"{CLUSTER_MS_PER_CONFIRM} ms ({main}/region"
                f"{'' if results['config']['workers'] else '; WORKERS OFF: not included'})",
                per_op(confirm, "cluster"), lambda v: v <= CLUSTER_MS_PER_CONFIRM, _ms),
        _target("hold path >= 50% of the lower raw limit",
                ratios["hold_vs_lower_raw_limit"], lambda v: v >= 0.5, pct),
        _target("seat-map reads from cache >= 70% of the trivial handler's req/s",
                ratios["hot_reads_vs_trivial"], lambda v: v >= 0.7, pct),
        _target(f"local seat-map p99 < 10 ms at {results['config']['read_clients']} readers",
                get(reads, "reads_hot", "p99_ms"), lambda v: v < 10, lambda v: f"{v:.1f} ms"),
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
    return rows


def _target(name: str, value: Any, check: Any, show: Any) -> dict[str, Any]:
    if value is None:
        return {"target": name, "value": None, "met": None, "shown": "not measured"}
    return {"target": name, "value": value, "met": bool(check(value)), "shown": show(value)}
