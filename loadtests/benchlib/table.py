"""The bench's printed report: rates, CPU per operation, raw limits, ratios, targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .report import get, pct, topologies

WRITES = (("hold direct", "holds_direct"), ("hold forwarded", "holds_forwarded"),
          ("confirm direct", "confirms_direct"), ("confirm forwarded", "confirms_forwarded"))
# CPU columns: (heading, group); `cluster` is every group but client and bench.
CPU_COLUMNS = (("cluster", "cluster"), ("nodes", "nodes"), ("r.mast", "redis masters"),
               ("r.repl", "redis replicas"), ("pg", "postgres"), ("workers", "workers"),
               ("gateway", "gateway"), ("client", "client"))


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _row(cells: list[str], widths: list[int]) -> str:
    first, *rest = cells
    return "  " + first.ljust(widths[0]) + "".join(c.rjust(w) for c, w in zip(rest, widths[1:],
                                                                            strict=True))


def _status_text(phase: dict[str, Any]) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(phase.get("statuses", {}).items()))


def _problems(phase: dict[str, Any]) -> list[str]:
    if not (phase.get("errors") or phase.get("exhausted")):
        return []
    return [f"     statuses {_status_text(phase)}  errors {phase.get('errors')}"
            + ("  (ran out of work before the time was up)" if phase.get("exhausted") else "")
            ] + [f"     {count} x {what}" for what, count in (phase.get("failures") or {}).items()]


def render(results: dict[str, Any]) -> str:
    m, cfg = results["machine"], results["config"]
    loads = results.get("load_average") or {}
    out = [f"bookcluster bench  {results['started_at']}",
           f"machine: {m['cpu_model']}, {m['nproc']} cores, {m['memory_gib']} GiB RAM, "
           f"Python {m['python']}, {m['redis']}, {m['postgres']}",
           f"clusters: 3 regions x {' and '.join(map(str, cfg['nodes_per_region']))} node(s), "
           f"durable={str(cfg['durable']).lower()}, workers={'on' if cfg['workers'] else 'off'}"
           f"; {cfg['duration_s']:g} s per phase, at most {cfg['max_requests']:,} requests",
           "load average (1/5/15 min): start " + " ".join(f"{x:.2f}" for x in
                                                           loads.get("start", []))
           + ", end " + " ".join(f"{x:.2f}" for x in loads.get("end", [])),
           f"NOTE: client ({cfg['load_procs']} load-generator processes, aiohttp) and every "
           "server share this machine's cores (and other users may too: see 'unacc.'): "
           "figures are lower bounds for the service.", ""]
    out += _peer(results) + [""]
    out += _writes(results) + [""] + _cpu(results) + [""] + _one_seat(results) + [""]
    out += _reads(results) + ["", *_best_rush(results), ""]
    out += ["", *_token_lines(results), ""] + _raw(results) + [""]
    out += _ratios(results)
    out += ["", *_change_delay_table(results), "", *_wan_table(results), "",
            "7. " + results["derived"]["bottleneck"]["verdict"], "", "targets:"]
    for t in results["derived"]["targets"]:
        mark = {True: "MET    ", False: "NOT MET", None: "n/a    "}[t["met"]]
        out.append(f"  [{mark}] {t['target']}: {t['shown']}")
    return "\n".join(out)


def _peer(results: dict[str, Any]) -> list[str]:
    peer = results.get("peer")
    if not peer:
        return ["P. peer shape: not run"]
    theirs, vs = peer["peer"], peer["vs_peer"]
    holds, flows, reads = peer["holds"], peer["flows"], peer["seat_map"]
    w = [34, 12, 12, 9]
    out = [f"P. the peer's load shape: {peer['clients']} clients, {peer['duration_s']:g} s, "
           f"{peer['seats']}-seat holds on shows of "
           f"{'/'.join(map(str, peer['show_seats']))} seats, writes sent to home nodes, "
           f"{results['config']['nodes_per_region'][0]} nodes per region",
           f"   peer figures: {peer['peer_source']}",
           _row(["", "ours", "peer", "ratio"], w),
           _row(["holds/s", fmt(holds.get("ok_per_s")), fmt(theirs["holds_per_s"]),
                 _x(vs["holds_per_s"])], w),
           _row(["whole-machine CPU ms per hold", fmt(holds.get("machine_cpu_ms_per_op"), 2),
                 fmt(theirs["machine_cpu_ms_per_hold"], 2), _x(vs["machine_cpu_per_hold"])], w),
           _row(["hold->pay->confirm flows/s", fmt(flows.get("ok_per_s")),
                 fmt(theirs["flows_per_s"]), _x(vs["flows_per_s"])], w),
           _row(["seat map req/s (1,000 seats)", fmt(reads.get("ok_per_s")),
                 fmt(theirs["seat_map_per_s"]), _x(vs["seat_map_per_s"])], w),
           _row(["seat map p99 ms", fmt(reads.get("p99_ms")), fmt(theirs["seat_map_p99_ms"]),
                 _x(vs["seat_map_p99"])], w),
           f"   holds: p50 {fmt(holds.get('p50_ms'))} / p99 {fmt(holds.get('p99_ms'))} ms; "
           f"CPU ms per hold: cluster {fmt(get(holds, 'cpu_ms_per_op', 'cluster'), 2)} ("
           + ", ".join(f"{g} {fmt(get(holds, 'cpu_ms_per_op', k), 2)}" for g, k in CPU_COLUMNS
                       if k not in ("cluster", "client"))
           + f"), load generator {fmt(get(holds, 'cpu_ms_per_op', 'client'), 2)}; "
           f"machine {busy(holds)} busy, {pct(get(holds, 'cpu', 'unaccounted_share'))} not ours",
           f"   flows: p50 {fmt(flows.get('p50_ms'))} / p99 {fmt(flows.get('p99_ms'))} ms per "
           f"booking; CPU ms per booking: cluster {fmt(flows.get('cluster_ms_per_booking'), 2)} "
           "without the gateway simulator ("
           + ", ".join(f"{g} {fmt(get(flows, 'cpu_ms_per_op', k), 2)}" for g, k in CPU_COLUMNS
                       if k not in ("cluster", "client"))
           + f"), whole machine {fmt(flows.get('machine_cpu_ms_per_op'), 2)}; machine "
           f"{busy(flows)} busy",
           *_problems(holds), *_problems(flows)]
    drain = flows.get("drain")
    if drain:
        out.append(f"   confirms answered {fmt(drain['answered_per_s'])}/s; workers drained "
                   f"{fmt(drain['drained_per_s'])} bookings/s ({fmt(drain['jobs_finished_per_s'])}"
                   f" jobs/s finished of {fmt(drain['jobs_made_per_s'])}/s made, "
                   f"{fmt(drain['jobs_per_op'], 2)} jobs per booking); backlog peak "
                   f"{drain['backlog_peak']:,}, jobs waiting at the end of the load "
                   f"{drain['jobs_backlog_at_end']:,}; all done "
                   f"{fmt(get(flows, 'after_load', 'tail_s'))} s after the load")
        out.append("   backlog over time (s: jobs waiting + mirror rows): " + ", ".join(
            f"{x['t_s']:g}: {x['total']}" for x in _thin(drain["samples"], 14)))
    cache = reads.get("cache") or {}
    if cache:
        out.append(f"   seat caches: {cache.get('cached_shows_before')} shows cached over all "
                   f"nodes before the seat-map phase, {cache.get('cached_shows_after')} after; "
                   f"lookups {cache.get('lookups')}")
    return out


def busy(phase: dict[str, Any]) -> str:
    return pct(get(phase, "cpu", "machine_busy_share"))


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _thin(samples: list[dict[str, Any]], most: int) -> list[dict[str, Any]]:
    step = max(1, -(-len(samples) // most))
    return samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])


def _writes(results: dict[str, Any]) -> list[str]:
    w = [30, 10, 9, 9, 9, 10]
    out = ["1. writes, by nodes per region and route (direct: to a home-region node; "
           f"forwarded: via another region's node), {results['config']['hold_clients']} "
           "clients; holds of 1-4 random free seats",
           _row(["", "ok/s", "p50 ms", "p99 ms", "max ms", "node ms"], w)]
    for top in topologies(results):
        for label, key in WRITES:
            phase = results["writes"][top].get(key) or {}
            out.append(_row([f"{top}/region {label}", fmt(phase.get("ok_per_s")),
                             fmt(phase.get("p50_ms")), fmt(phase.get("p99_ms")),
                             fmt(phase.get("max_ms")), fmt(phase.get("server_mean_ms"), 2)],
                            w))
            out += _problems(phase)
    return out


def _cpu(results: dict[str, Any]) -> list[str]:
    w = [30] + [8] * len(CPU_COLUMNS) + [8, 8]
    out = ["2. CPU ms per operation by process group (with workers: what the phase left them "
           "included, net of idle); machine: busy share over the phase, 'unacc.' the busy "
           "share no group of ours accounts for",
           _row(["", *(h for h, _ in CPU_COLUMNS), "busy", "unacc."], w)]
    notes = []
    for top in topologies(results):
        for label, key in WRITES:
            phase = results["writes"][top].get(key) or {}
            per = phase.get("cpu_ms_per_op") or {}
            out.append(_row([f"{top}/region {label}",
                             *(fmt(per.get(g), 2) for _, g in CPU_COLUMNS),
                             pct(get(phase, "cpu", "machine_busy_share")),
                             pct(get(phase, "cpu", "unaccounted_share"))], w))
            tail = phase.get("after_load")
            if tail:
                notes.append(f"     {top}/region {label}: backlog at the end "
                             f"{tail['backlog_at_end']['total']:,} ({tail['backlog_at_end']}), "
                             f"done {tail['tail_s']:.1f} s later"
                             + ("" if tail["emptied"] else " (NOT emptied: timed out)")
                             + f": {fmt(phase.get('settled_per_s'))}/s answered and "
                               "finished by the workers")
        cache = get(results["writes"][top], "holds_direct", "cache") or {}
        if cache:
            notes.append(f"     {top}/region seat caches: {cache['cached_shows_before']} shows "
                         f"cached over all nodes before the direct holds, "
                         f"{cache['cached_shows_after']} after; {cache['subscribed_shows_after']}"
                         " show subscriptions")
        idle = results["writes"][top].get("idle_cpu_ms_per_s")
        if idle:
            notes.append(f"     {top}/region idle CPU, ms per s: " + ", ".join(
                f"{k} {v:g}" for k, v in idle.items()))
    return out + notes + [
        "     tokens: every hold carries a fresh user's token (verified on first sight); a "
        "confirm carries its hold's token, cached only on the node that served that hold"]


def _one_seat(results: dict[str, Any]) -> list[str]:
    out = [f"1b. one seat, {results['config']['rush_clients']} clients at once over every "
           "node (most forwarded); the show in no seat cache before"]
    for top in topologies(results):
        rush = results["writes"][top].get("one_seat") or {}
        out.append(f"  {top}/region: p50 {fmt(rush.get('p50_ms'))} / p99 "
                   f"{fmt(rush.get('p99_ms'))} / max {fmt(rush.get('max_ms'))} ms; answers: "
                   + ", ".join(f"{n} x {k}" for k, n in (rush.get("answers") or {}).items())
                   + f"; nodes counted {rush.get('node_holds')}")
    return out


def _reads(results: dict[str, Any]) -> list[str]:
    reads, cfg = results.get("reads") or {}, results["config"]
    w = [44, 10, 9, 9, 9, 10]
    out = [f"3. reads ({cfg['nodes_per_region'][0]}/region), {cfg['read_clients']} readers, "
           "each on nodes of its own region",
           _row(["", "ok/s", "p50 ms", "p99 ms", "max ms", "node ms"], w)]
    for label, key in (("trivial aiohttp handler", "reads_trivial"),
                       ("seat map, hot show cached on every node", "reads_hot"),
                       ("seat map, cold (first read after a RESET)", "reads_cold")):
        phase = reads.get(key) or {}
        out.append(_row([label, fmt(phase.get("ok_per_s")), fmt(phase.get("p50_ms")),
                         fmt(phase.get("p99_ms")), fmt(phase.get("max_ms")),
                         fmt(phase.get("server_mean_ms"), 2)], w))
        out += _problems(phase)
    cold = reads.get("reads_cold") or {}
    out.append(f"     cold reads: {cold.get('rounds')} invalidation rounds, cache miss share "
               f"{pct(cold.get('miss_share'))}; response body: seat map "
               f"{fmt(get(reads, 'reads_hot', 'bytes_per_answer'), 0)} B, trivial "
               f"{fmt(get(reads, 'reads_trivial', 'bytes_per_answer'), 0)} B")
    return out


def _raw(results: dict[str, Any]) -> list[str]:
    raw = results.get("raw")
    out = ["5. raw limits on this machine (fresh servers, same binaries and settings); "
           "server CPU per operation"]
    if raw is None:
        return out + ["  skipped (--no-raw)"]
    w = [44, 10, 9, 9, 12]
    out.append(_row(["", "ops/s", "p50 ms", "p99 ms", "server CPU"], w))
    redis = raw.get("redis_hold") or {}
    pg = raw.get("pg") or {}
    if "skipped" in redis:
        out.append(f"  redis-benchmark: skipped: {redis['skipped']}")
    else:
        out.append(_row([f"redis-benchmark EVALSHA HOLD (-c {redis.get('clients')})",
                         fmt(redis.get("per_s")), fmt(redis.get("p50_ms"), 2),
                         fmt(redis.get("p99_ms"), 2),
                         f"{fmt(redis.get('server_cpu_ms_per_op'), 3)} ms"], w))
    if "skipped" in pg:
        out.append(f"  pgbench: skipped: {pg['skipped']}")
    for label, key in (("pgbench bc_record_hold", "hold_write"),
                       ("pgbench bc_confirm", "confirm")):
        part = pg.get(key) or {}
        if part:
            out.append(_row([f"{label} (-c {part.get('clients')})", fmt(part.get("per_s")),
                             fmt(get(part, "latency", "p50_ms")),
                             fmt(get(part, "latency", "p99_ms")),
                             f"{fmt(part.get('server_cpu_ms_per_op'), 3)} ms"
                             + (" EXHAUSTED" if part.get("exhausted") else "")], w))
    stages = raw.get("stages") or {}
    for label, key in (("Python redis-py HOLD script", "redis_script"),
                       ("Python asyncpg bc_record_hold", "pg_write")):
        part = stages.get(key) or {}
        if part:
            out.append(_row([f"{label} (c={stages.get('concurrency')})",
                             fmt(part.get("per_s")), fmt(part.get("p50_ms")),
                             fmt(part.get("p99_ms")), ""], w))
    return out


def _ratios(results: dict[str, Any]) -> list[str]:
    r = results["derived"]["ratios"]
    t = r["vs_targets"]
    ceil = r["store_ceiling"]
    out = ["ratios",
           f"  store-only ceiling ({ceil['cores']} cores doing nothing but the stores' own "
           f"work, priced by the raw limits): holds {fmt(ceil['holds_per_s'])}/s "
           f"({fmt(ceil['hold_store_cpu_ms'], 3)} ms), confirms {fmt(ceil['confirms_per_s'])}/s "
           f"({fmt(ceil['confirm_store_cpu_ms'], 3)} ms); ours: holds "
           f"{pct(r['holds_vs_store_ceiling'])}, confirms {pct(r['confirms_vs_store_ceiling'])}",
           f"  direct holds / lower raw limit ({r['lower_raw_limit'] or 'not measured'}): "
           f"{pct(r['hold_vs_lower_raw_limit'])}; direct confirms / pgbench bc_confirm: "
           f"{pct(r['confirm_vs_pg_confirm_limit'])}",
           f"  seat map / trivial handler: hot {pct(r['hot_reads_vs_trivial'])}, cold "
           f"{pct(r['cold_reads_vs_trivial'])}",
           "  forwarded / direct hold: node CPU "
           f"{fmt(r['forwarded_vs_direct_node_cpu_per_hold'], 2)}x, holds/s "
           f"{fmt(r['forwarded_vs_direct_holds_per_s'], 2)}x",
           f"  stores in the cluster / alone, CPU per op: Redis masters per hold "
           f"{fmt(r['redis_master_cpu_per_hold_vs_raw'], 2)}x, PostgreSQL per hold "
           f"{fmt(r['postgres_cpu_per_hold_vs_raw'], 2)}x, per confirm "
           f"{fmt(r['postgres_cpu_per_confirm_vs_raw'], 2)}x",
           f"  CPU per op / target: cluster per direct hold "
           f"{fmt(t['cluster_cpu_per_direct_hold'], 2)}x, node per direct hold "
           f"{fmt(t['node_cpu_per_direct_hold'], 2)}x, node per forwarded hold "
           f"{fmt(t['node_cpu_per_forwarded_hold'], 2)}x, cluster per direct confirm "
           f"{fmt(t['cluster_cpu_per_direct_confirm'], 2)}x"]
    out.append(f"  hold + confirm flows/s (direct): {fmt(r['flows_per_s_phases'])} from the two "
               f"phases' rates; {fmt(r['flows_per_s_cpu_bound'])} if the machine's cores did "
               "nothing but these flows, the workers' share included")
    for name, values in r["by_topology"].items():
        out.append(f"  {name.replace('_vs_', '/region vs ')}/region: " + ", ".join(
            f"{k} {fmt(v, 2)}x" for k, v in values.items()))
    return out


def _token_lines(results: dict[str, Any]) -> list[str]:
    cost = results.get("token_verify")
    if not cost:
        return ["0. token verification: not measured"]
    shares = get(results, "derived", "token_verify") or {}

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
            f"per direct hold, {share('share_of_node_cpu_per_confirm')} per direct "
            "confirm (a forwarded write is verified at both nodes)"]


def _change_delay_table(results: dict[str, Any]) -> list[str]:
    out = ["4. change -> remote cache: master ts -> delta on a node's WebSocket, p50 / p99 ms "
           "(*: some holds came in a fresh snapshot instead; !: some never came)"]
    for delay, run in sorted(results["runs"].items(), key=lambda kv: int(kv[0])):
        pairs = get(run, "change_delay", "pairs")
        if not pairs:
            continue
        regions = sorted({p["reader"] for p in pairs.values()})
        out.append(f"  WAN {delay} ms one way; rows: home (hold made there), columns: reader")
        out.append("  " + "".ljust(10) + "".join(r.rjust(16) for r in regions))
        for home in regions:
            cells = []
            for reader in regions:
                p = pairs[f"{home}->{reader}"]
                cells.append(f"{fmt(p['from_ts']['p50_ms'])}/{fmt(p['from_ts']['p99_ms'])}"
                             + ("" if p["received"] == p["expected"] else
                                "*" if p["received"] + p.get("via_snapshot", 0)
                                == p["expected"] else "!"))
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
        cells = [f"{fmt(get(run, 'local_remote', key, 'p50_ms'))}/"
                 f"{fmt(get(run, 'local_remote', key, 'p99_ms'))}" for _, run in runs]
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
    remote = get(run, "local_remote", f"{op}_remote", "p50_ms")
    local = get(run, "local_remote", f"{op}_local", "p50_ms")
    return None if remote is None or local is None else remote - local


def _best_rush(results: dict[str, Any]) -> list[str]:
    rush = results.get("best_rush")
    if not rush:
        return ["R. the rush on one show: not run"]
    best, pick = rush["best"], rush["pick"]

    def scripts(r: dict[str, Any]) -> str:
        names = r["master_scripts"]["scripts"]
        return ", ".join(f"{k} {fmt(v['p99_us'], 0)}" for k, v in names.items()
                         if k != "all scripts") or "-"

    def cpu(r: dict[str, Any], group: str) -> str:
        return fmt((r["cpu_ms_per_seat"] or {}).get(group), 2)

    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
            ("seats held / show", lambda r: f"{r['seats_held']}/{r['show_seats']}"),
            ("time to sell out (s)", lambda r: fmt(r["sell_out_s"], 2)
             + ("" if r["seats_left"] == 0 else f" ({r['seats_left']} left)")),
            ("last free seat gone (PostgreSQL, s)", lambda r: fmt(r.get("postgres_sold_out_s"), 2)),
            ("hold requests", lambda r: fmt(r["hold_requests"])),
            ("refused share (of which 503)", lambda r: f"{(r['refused_share'] or 0) * 100:.1f}%"
             f" ({r.get('answers_503', 0) / max(1, r['hold_requests']) * 100:.1f}%)"),
            ("seats per hold", lambda r: fmt(r["seats_per_hold"], 2)),
            ("hold p50 / p99 (ms)", lambda r: f"{fmt(r['hold_latency']['p50_ms'], 0)} / "
             f"{fmt(r['hold_latency']['p99_ms'], 0)}"),
            ("seat-map reads", lambda r: fmt(r["map_reads"])),
            ("cluster CPU per seat (ms)", lambda r: cpu(r, "cluster")),
            ("  nodes / r.mast / pg", lambda r: f"{cpu(r, 'nodes')} / "
             f"{cpu(r, 'redis masters')} / {cpu(r, 'postgres')}"),
            ("master, all scripts p99 (µs)", lambda r: fmt(
                (r["master_scripts"]["scripts"].get("all scripts") or {}).get("p99_us"), 0)),
            ("seats held twice (PostgreSQL)", lambda r: fmt(r["seats_held_twice"])),
            ("held on the master only, at the end", lambda r: fmt(r.get("held_on_master_only")))]
    w = [36, 22, 22]
    out = [f"R. the rush on one show: {rush['clients']} clients, {rush['seats'][0]}-"
           f"{rush['seats'][1]} seats a person, a fresh user each, holds sent to {rush['home']}"
           f" nodes, at most {rush['duration_s']:g} s",
           _row(["", "best available", "picking from map"], w)]
    out += [_row([name, value(best), value(pick)], w) for name, value in rows]
    out += [f"  master script p99 (µs), best: {scripts(best)}",
            f"  master script p99 (µs), picking: {scripts(pick)}"]
    for r in (best, pick):
        out.append(f"  answers, {r['kind']}: " + ", ".join(
            f"{k} x{v}" for k, v in r["answers"].items()))
    return out
