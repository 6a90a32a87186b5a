"""The bench's verdicts (ratios, targets, bottleneck) and its printed table."""

from __future__ import annotations

from typing import Any

from .stats import ratio


def _get(data: Any, *path: Any) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def derive(results: dict[str, Any]) -> dict[str, Any]:
    """Ratios to the raw limits and the yardstick, the bottleneck and the targets."""
    full = results["full"]
    raw = results.get("raw") or {}
    hold_rate = _get(full, "holds", "ok_per_s")
    redis_limit = _get(raw, "redis_hold", "per_s")
    pg_hold_limit = _get(raw, "pg", "hold_write", "per_s")
    limits = [v for v in (redis_limit, pg_hold_limit) if v]
    lower = min(limits) if limits else None
    ratios = {
        "hold_vs_lower_raw_limit": ratio(hold_rate, lower),
        "lower_raw_limit": ("redis hold script" if lower == redis_limit else
                            "pg hold write") if lower else None,
        "confirm_vs_pg_confirm_limit": ratio(_get(full, "confirms", "ok_per_s"),
                                             _get(raw, "pg", "confirm", "per_s")),
        "hot_reads_vs_trivial": ratio(_get(full, "reads_hot", "ok_per_s"),
                                      _get(full, "reads_trivial", "ok_per_s")),
        "cold_reads_vs_trivial": ratio(_get(full, "reads_cold", "ok_per_s"),
                                       _get(full, "reads_trivial", "ok_per_s")),
    }
    return {"ratios": ratios, "bottleneck": bottleneck(results), "targets": targets(results,
                                                                                   ratios),
            "token_verify": token_share(results)}


def token_share(results: dict[str, Any]) -> dict[str, Any]:
    """One token verification against the node CPU a hold and a confirm cost (a write
    that enters at another region's node is verified there and again at home)."""
    verify_us = _get(results, "token_verify", "identity_us")
    full = results["full"]
    per = {op: _get(cpu_per_op(full.get(key) or {}), "nodes")
           for op, key in (("hold", "holds"), ("confirm", "confirms"))}
    return {f"share_of_node_cpu_per_{op}": ratio(verify_us / 1000, ms) if verify_us else None
            for op, ms in per.items()}


NAMES = {"nodes": "app-node CPU (Python)", "postgres": "PostgreSQL", "redis": "Redis",
         "client": "the load generator", "wan proxy": "the WAN proxy", "workers": "workers",
         "gateway": "the payment gateway simulator"}
CPU_BOUND = 0.8  # busier than this, the machine's cores are what runs out


def cpu_per_op(phase: dict[str, Any]) -> dict[str, float]:
    """CPU ms each group spent per successful operation of a phase."""
    used = _get(phase, "cpu", "cpu_s") or {}
    ok = phase.get("ok") or 0
    return {k: round(v * 1000 / ok, 2) for k, v in used.items()} if ok else {}


def bottleneck(results: dict[str, Any]) -> dict[str, Any]:
    """Where a hold's cost goes. On a CPU-bound machine: the group that burns the most CPU
    per hold; otherwise the slowest stage, timed alone at the same concurrency."""
    holds = _get(results, "full", "holds") or {}
    stages = _get(results, "raw", "stages") or {}
    per_hold = cpu_per_op(holds)
    busy = _get(holds, "cpu", "busy_share_of_machine")
    total_ms = holds.get("mean_ms")
    redis_ms = _get(stages, "redis_script", "mean_ms")
    pg_ms = _get(stages, "pg_write", "mean_ms")
    shares: dict[str, float] = {}
    if total_ms and redis_ms is not None and pg_ms is not None:
        shares = {"Redis script": min(1.0, redis_ms / total_ms),
                  "PostgreSQL write": min(1.0, pg_ms / total_ms)}
    servers = {k: v for k, v in per_hold.items() if k != "client"}
    if servers and busy is not None and busy >= CPU_BOUND:
        top = max(servers, key=lambda k: servers[k])
        cpu_total = sum(per_hold.values())
        verdict = (f"hold: {NAMES.get(top, top)} is the bottleneck "
                   f"({per_hold[top] / cpu_total * 100:.0f}% of the CPU time a hold costs; "
                   f"machine {busy * 100:.0f}% busy); CPU ms per hold: " + ", ".join(
                       f"{k} {v:.2f}" for k, v in sorted(per_hold.items(),
                                                         key=lambda kv: -kv[1])))
    elif shares:
        stage = max(shares, key=lambda k: shares[k])
        verdict = (f"hold: the {stage} is the bottleneck ({shares[stage] * 100:.0f}% of a "
                   f"hold's time; machine {_pct(busy)} busy)")
    else:
        verdict = "hold: not measured"
    if shares:
        verdict += (f"; timed alone from Python at {stages.get('concurrency')} clients: Redis "
                    f"script {redis_ms:.1f} ms, PostgreSQL write {pg_ms:.1f} ms, mean hold "
                    f"{total_ms:.1f} ms")
    return {"verdict": verdict, "cpu_ms_per_hold": per_hold,
            "cpu_ms_per_confirm": cpu_per_op(_get(results, "full", "confirms") or {}),
            "busy_share_of_machine": busy,
            "stage_time_shares": {k: round(v, 3) for k, v in shares.items()}}


def targets(results: dict[str, Any], ratios: dict[str, Any]) -> list[dict[str, Any]]:
    full = results["full"]
    rush = full.get("one_seat") or {}
    hot = full.get("reads_hot") or {}
    rows = [
        _target("hold path >= 50% of the lower raw limit",
                ratios["hold_vs_lower_raw_limit"], lambda v: v >= 0.5, _pct),
        _target("seat-map reads from cache >= 70% of the trivial handler's req/s",
                ratios["hot_reads_vs_trivial"], lambda v: v >= 0.7, _pct),
        _target(f"local seat-map p99 < 10 ms at {results['config']['read_clients']} readers",
                hot.get("p99_ms"), lambda v: v < 10, lambda v: f"{v:.1f} ms"),
    ]
    for delay, run in sorted(results["runs"].items(), key=lambda kv: int(kv[0])):
        pairs = _get(run, "change_delay", "pairs") or {}
        cross = [p["from_ts"]["p99_ms"] for p in pairs.values()
                 if p["home"] != p["reader"] and p["from_ts"]["p99_ms"] is not None]
        lost = sum(p["expected"] - p["received"] for p in pairs.values())
        limit = 50 + int(delay)
        worst = max(cross) if cross else None
        rows.append(_target(
            f"remote cache reflects a change within {limit} ms at p99 (WAN {delay} ms)",
            worst, lambda v, lim=limit, lost=lost: v < lim and lost == 0,
            lambda v, lost=lost: f"worst pair p99 {v:.1f} ms" + (f", {lost} deltas missing"
                                                                  if lost else "")))
    rows.append(_target(
        f"{rush.get('clients', '?')} clients on one seat: exactly one 201, the rest clean 409",
        rush.get("created_201"),
        lambda v: v == 1 and rush.get("clean_409") == rush.get("clients", 0) - 1,
        lambda v: f"{v} x 201, {rush.get('clean_409')} x 409, other {rush.get('other')}"))
    rows.append(_target("one-seat p99 < 100 ms", rush.get("p99_ms"), lambda v: v < 100,
                        lambda v: f"{v:.1f} ms"))
    return rows


def _target(name: str, value: Any, check: Any, show: Any) -> dict[str, Any]:
    if value is None:
        return {"target": name, "value": None, "met": None, "shown": "not measured"}
    return {"target": name, "value": value, "met": bool(check(value)), "shown": show(value)}


# -- the printed table ------------------------------------------------------------------

def _row(cells: list[str], widths: list[int]) -> str:
    first, *rest = cells
    return "  " + first.ljust(widths[0]) + "".join(c.rjust(w) for c, w in zip(rest, widths[1:],
                                                                            strict=True))


def _status_text(phase: dict[str, Any]) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(phase.get("statuses", {}).items()))


def render(results: dict[str, Any]) -> str:
    m, cfg, full, raw = results["machine"], results["config"], results["full"], results.get("raw")
    d = results["derived"]
    out = [f"bookcluster bench  {results['started_at']}",
           f"machine: {m['cpu_model']}, {m['nproc']} cores, {m['memory_gib']} GiB RAM, "
           f"Python {m['python']}, {m['redis']}, {m['postgres']}",
           f"cluster: {cfg['regions']} regions x {cfg['nodes_per_region']} nodes, durable="
           f"{str(cfg['durable']).lower()}, workers={'on' if cfg['workers'] else 'off'}; "
           f"{cfg['duration_s']:g} s per phase, at most {cfg['max_requests']:,} requests",
           f"NOTE: client ({cfg['load_procs']} load-generator processes, aiohttp) and every "
           "server share this machine's cores: figures are lower bounds for the service.", ""]
    w = [44, 10, 9, 9, 9, 10]
    out.append(_row(["", "ok/s", "p50 ms", "p99 ms", "max ms", "node ms"], w))
    for label, key in ((f"1a hold, 1-4 random seats ({cfg['hold_clients']} clients)", "holds"),
                       (f"2  confirm ({cfg['hold_clients']} clients)", "confirms"),
                       (f"3  trivial aiohttp handler ({cfg['read_clients']} rd.)",
                        "reads_trivial"),
                       (f"3  seat map, hot show cached ({cfg['read_clients']} rd.)",
                        "reads_hot"),
                       (f"3  seat map, cold (first read) ({cfg['read_clients']} rd.)",
                        "reads_cold")):
        phase = full.get(key) or {}
        out.append(_row([label, _fmt(phase.get("ok_per_s")), _fmt(phase.get("p50_ms")),
                         _fmt(phase.get("p99_ms")), _fmt(phase.get("max_ms")),
                         _fmt(phase.get("server_mean_ms"), 2)], w))
        if phase.get("errors") or phase.get("exhausted"):
            out.append(f"     statuses {_status_text(phase)}  errors {phase.get('errors')}"
                       + ("  (ran out of work before the time was up)"
                          if phase.get("exhausted") else ""))
    rush = full.get("one_seat") or {}
    out.append(_row([f"1b one seat, {rush.get('clients')} clients at once", "",
                     _fmt(rush.get("p50_ms")), _fmt(rush.get("p99_ms")),
                     _fmt(rush.get("max_ms")), _fmt(rush.get("server_mean_ms"), 2)], w))
    out.append(f"     201: {rush.get('created_201')}   clean 409 seats_unavailable: "
               f"{rush.get('clean_409')}   other: {rush.get('other') or 'none'}")
    cold = full.get("reads_cold") or {}
    out.append(f"     cold reads: {cold.get('rounds')} invalidation rounds, cache miss share "
               f"{_pct(cold.get('miss_share'))}")

    for label, key in (("hold", "holds"), ("confirm", "confirms")):
        per = cpu_per_op(full.get(key) or {})
        if per:
            out.append(f"     CPU ms per {label}: " + ", ".join(
                f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
                + f"  (machine {_pct(_get(full, key, 'cpu', 'busy_share_of_machine'))} busy)")
    sizes = [f"{label} {_fmt(_get(full, key, 'bytes_per_answer'), 0)} B" for label, key in
             (("seat map", "reads_hot"), ("trivial", "reads_trivial"))]
    out.append("     response body: " + ", ".join(sizes))
    out += ["", *_token_lines(results)]
    out += ["", "5. raw limits on this machine (fresh servers, same binaries and settings)"]
    if raw is None:
        out.append("  skipped (--no-raw)")
    else:
        redis = raw.get("redis_hold") or {}
        pg = raw.get("pg") or {}
        out.append(_row(["", "ops/s", "p50 ms", "p99 ms", "", ""], w))
        if "skipped" in redis:
            out.append(f"  redis-benchmark: skipped: {redis['skipped']}")
        else:
            out.append(_row([f"redis-benchmark EVALSHA HOLD (-c {redis.get('clients')})",
                             _fmt(redis.get("per_s")), _fmt(redis.get("p50_ms"), 2),
                             _fmt(redis.get("p99_ms"), 2), "", ""], w))
        if "skipped" in pg:
            out.append(f"  pgbench: skipped: {pg['skipped']}")
        for label, key in (("pgbench bc_record_hold", "hold_write"),
                           ("pgbench confirm transaction", "confirm")):
            part = pg.get(key) or {}
            if part:
                out.append(_row([f"{label} (-c {part.get('clients')})", _fmt(part.get("per_s")),
                                 _fmt(_get(part, "latency", "p50_ms")),
                                 _fmt(_get(part, "latency", "p99_ms")), "",
                                 "EXHAUSTED" if part.get("exhausted") else ""], w))
        stages = raw.get("stages") or {}
        for label, key in (("Python redis-py HOLD script", "redis_script"),
                           ("Python asyncpg bc_record_hold", "pg_write")):
            part = stages.get(key) or {}
            if part:
                out.append(_row([f"{label} (c={stages.get('concurrency')})",
                                 _fmt(part.get("per_s")), _fmt(part.get("p50_ms")),
                                 _fmt(part.get("p99_ms")), "", ""], w))
    r = d["ratios"]
    out += ["", f"  hold / lower raw limit ({r['lower_raw_limit'] or 'not measured'}): "
                f"{_pct(r['hold_vs_lower_raw_limit'])}    confirm / pg confirm limit: "
                f"{_pct(r['confirm_vs_pg_confirm_limit'])}",
            f"  seat map / trivial handler: hot {_pct(r['hot_reads_vs_trivial'])}, cold "
            f"{_pct(r['cold_reads_vs_trivial'])}"]
    out += ["", *_change_delay_table(results), "", *_wan_table(results), "",
            "7. " + d["bottleneck"]["verdict"], "", "targets:"]
    for t in d["targets"]:
        mark = {True: "MET    ", False: "NOT MET", None: "n/a    "}[t["met"]]
        out.append(f"  [{mark}] {t['target']}: {t['shown']}")
    return "\n".join(out)


def _token_lines(results: dict[str, Any]) -> list[str]:
    cost = results.get("token_verify")
    if not cost:
        return ["0. token verification: not measured"]
    shares = _get(results, "derived", "token_verify") or {}

    def share(key: str) -> str:
        value = shares.get(key)
        return "-" if value is None else f"{value * 100:.1f}%"

    return [f"0. token verification ({cost['algorithm']}, PyJWT {cost['pyjwt']}, iss/aud "
            f"{'checked' if cost['checks_iss_aud'] else 'not configured'}; one core, "
            f"{cost['calls']:,} calls x {cost['rounds']}, median of rounds)",
            f"     TokenVerifier.identity(): {cost['identity_us']:.1f} µs per valid token "
            f"seen first (best {cost['identity_us_best']:.1f}), "
            f"{cost['identity_per_core_per_s']:,}/s per core; "
            f"{cost.get('repeated_us', 0):.2f} µs when seen again (cached until it expires); "
            f"forged signature refused in {cost['bad_signature_us']:.1f} µs; "
            f"mint {cost['mint_us']:.1f} µs",
            f"     one verification = {share('share_of_node_cpu_per_hold')} of the node CPU "
            f"per hold, {share('share_of_node_cpu_per_confirm')} per "
            "confirm (a write entering at another region's node is verified twice)"]


def _change_delay_table(results: dict[str, Any]) -> list[str]:
    out = ["4. change -> remote cache: master ts -> delta on a node's WebSocket, p50 / p99 ms"]
    for delay, run in sorted(results["runs"].items(), key=lambda kv: int(kv[0])):
        pairs = _get(run, "change_delay", "pairs")
        if not pairs:
            continue
        regions = sorted({p["reader"] for p in pairs.values()})
        out.append(f"  WAN {delay} ms one way; rows: home (hold made there), columns: reader")
        out.append("  " + "".ljust(10) + "".join(r.rjust(16) for r in regions))
        for home in regions:
            cells = []
            for reader in regions:
                p = pairs[f"{home}->{reader}"]
                cells.append(f"{_fmt(p['from_ts']['p50_ms'])}/{_fmt(p['from_ts']['p99_ms'])}"
                             + ("" if p["received"] == p["expected"] else "!"))
            out.append("  " + home.ljust(10) + "".join(c.rjust(16) for c in cells))
    return out


def _wan_table(results: dict[str, Any]) -> list[str]:
    runs = sorted(results["runs"].items(), key=lambda kv: int(kv[0]))
    out = ["6. local vs remote, p50 / p99 ms at low concurrency (WAN delay one way)"]
    out.append("  " + "".ljust(34) + "".join(f"WAN {d} ms".rjust(18) for d, _ in runs))
    rows = (("hold via home-region node", "hold_local"),
            ("hold via other-region node", "hold_remote"),
            ("confirm via home-region node", "confirm_local"),
            ("confirm via other-region node", "confirm_remote"),
            ("seat map, reader's own region", "read_local"))
    for label, key in rows:
        cells = [f"{_fmt(_get(run, 'local_remote', key, 'p50_ms'))}/"
                 f"{_fmt(_get(run, 'local_remote', key, 'p99_ms'))}" for _, run in runs]
        out.append("  " + label.ljust(34) + "".join(c.rjust(18) for c in cells))
    for op in ("hold", "confirm"):
        cells = []
        for delay, run in runs:
            extra = _extra(run, op)
            rtt = 2 * int(delay)
            cells.append("-" if extra is None else
                         f"{extra:+.0f}" + (f" ({extra / rtt:.1f} RTT)" if rtt else ""))
        out.append("  " + f"{op}: remote - local p50".ljust(34) + "".join(c.rjust(18)
                                                                          for c in cells))
    return out


def _extra(run: dict[str, Any], op: str) -> float | None:
    remote = _get(run, "local_remote", f"{op}_remote", "p50_ms")
    local = _get(run, "local_remote", f"{op}_local", "p50_ms")
    return None if remote is None or local is None else remote - local
