#!/usr/bin/env python3
"""The on-sale benchmark: a crowd at one 1,000-seat show's queue, then the same show
without a queue, side by side, on one fresh local cluster.

    .venv/bin/python loadtests/onsale.py [--arrivals 200000] [--arrive-s 200] ...

*Queue*: an on-sale of one show of `north` (its queue opens at once, its sale
`--sale-after-s` after the first arrival). `--arrivals` users arrive at a steady rate
over `--arrive-s` seconds, spread over `--procs` crowd processes (`benchlib/queuegen.py`:
raw keep-alive HTTP/1.1, no object per user); each joins at a node of the home region
and polls its position at a node of its own region (users spread over the three) after
each answer's `poll_after_s` (backing off on errors), until told it sold out; the
admitted hold best-available seats with their pass, pay (gateway simulator) and
confirm. The crowd stops when every user is done or `--max-s` passed.

*No queue*: another 1,000-seat show of `north`, no on-sale: `--rush-clients` clients
ask for the best seats straight away, one person after another (`benchlib/bestrush.py`,
the bench's own rush), until PostgreSQL has no free seat or `--rush-s` passed.

Prints and writes (results/onsale-<UTC>.json and .png): arrivals/s absorbed, CPU per
arrival and per poll (cluster CPU in the arrival window less its polls at the
poll-only window's cost per poll, / joins; cluster CPU after the arrivals / polls),
join and poll p50/p99, sale_at to sold out (every seat confirmed in PostgreSQL), seats
sold, seats sold twice (the audit's check and PostgreSQL), 5xx answered to users,
admission-order violations (`bookcluster audit`), hold p99 with and without the queue,
and the no-queue rush's 503/409 and time to sell out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from benchlib import bestrush, log
from benchlib.cpu import cpu_groups, snapshot, usage
from benchlib.local import BenchCluster, bench_cluster
from benchlib.phases import Load
from benchlib.stats import percentile

from bookcluster.node.auth import mint
from bookcluster.ops.audit import run_audit
from bookcluster.ops.demo_catalog import CatalogSpec

HERE = Path(__file__).resolve().parent
CATALOG = CatalogSpec(theatres_per_city=1, cities_per_region=1, days=1, shows_per_day=2,
                      layout=(25, 40))
# Every user is 127.0.0.1 here: the per-address write rate would measure the crowd.
LIMITS = "  ip_writes: {per_second: 1000000, burst: 1000000}\n" \
         "  ip_reads: {per_second: 1000000, burst: 1000000}"
HARNESS = {"client", "bench"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arrivals", type=int, default=200_000)
    p.add_argument("--arrive-s", type=float, default=300.0,
                   help="seconds over which the users arrive (300)")
    p.add_argument("--sale-after-s", type=float, default=None,
                   help="sale_at, seconds after the first arrival (3/4 of --arrive-s)")
    p.add_argument("--procs", type=int, default=3, help="crowd processes (3)")
    p.add_argument("--workers", type=int, default=300,
                   help="requests in flight per crowd process at most (300)")
    p.add_argument("--conns-per-node", type=int, default=24)
    p.add_argument("--max-s", type=float, default=600.0,
                   help="the crowd stops after this many seconds at most (600)")
    p.add_argument("--window-s", type=int, default=300, help="the shopping window (300)")
    p.add_argument("--max-party", type=int, default=4)
    p.add_argument("--nodes-per-region", type=int, default=5)
    p.add_argument("--fast", action="store_true", help="durable: false")
    p.add_argument("--rush-clients", type=int, default=1000)
    p.add_argument("--rush-s", type=float, default=60.0)
    p.add_argument("--no-rush", action="store_true", help="the queue only")
    p.add_argument("--results", type=Path, default=HERE / "results")
    return p.parse_args(argv)


def cluster_cpu(window: dict[str, Any]) -> float:
    return sum(v for k, v in window["cpu_s"].items() if k not in HARNESS)


async def create_onsale(cluster: BenchCluster, http: aiohttp.ClientSession, show: int,
                        sale_at: datetime, args: argparse.Namespace) -> str:
    token = mint(cluster.topology, "bench-operator", 3600.0, ("operator",))
    body = {"shows": [show], "opens_at": (datetime.now(UTC) - timedelta(seconds=1)).isoformat(),
            "sale_at": sale_at.isoformat(), "window_s": args.window_s,
            "max_party": args.max_party}
    async with http.post(cluster.nodes("north")[0] + "/ops/onsales", json=body,
                         headers={"Authorization": f"Bearer {token}"}) as resp:
        answer = await resp.json()
        if resp.status != 201:
            raise RuntimeError(f"creating the on-sale: {resp.status} {answer}")
    onsale = str(answer["id"])
    for region in cluster.topology.regions:  # listed everywhere before anyone polls
        for _ in range(100):
            async with http.get(cluster.nodes(region)[0] + "/onsales") as resp:
                if onsale in [o["id"] for o in (await resp.json())["onsales"]]:
                    break
            await asyncio.sleep(0.1)
    await asyncio.sleep(1.5)  # every node guards the show (GUARD_REFRESH_S)
    return onsale


async def watch_sold(cluster: BenchCluster, show: int, over: asyncio.Event) -> float | None:
    """The wall-clock time PostgreSQL had every seat of the show sold (none free or
    held), or None."""
    conn = await bestrush._connect(cluster, show)
    try:
        while not over.is_set():
            left = await conn.fetchval("SELECT count(*) FROM show_seat WHERE show_id = $1 "
                                       "AND status IN ('AVAILABLE', 'LOCKED')", show)
            if left == 0:
                return time.time()
            try:
                await asyncio.wait_for(over.wait(), 0.25)
            except TimeoutError:
                pass
        return None
    finally:
        await conn.close()


async def crowd(cluster: BenchCluster, args: argparse.Namespace, onsale: str, show: int,
                go_at: float, folder: Path) -> list[dict[str, Any]]:
    home = cluster.home_of(show)
    payments = cluster.topology.payments
    assert payments is not None
    gateway = {"url": f"http://{payments.gateway.host}:{payments.gateway.port}",
               "api_key": cluster.topology.secrets.get("gateway_api_key")}
    procs = []
    for i in range(args.procs):
        users = args.arrivals // args.procs + (1 if i < args.arrivals % args.procs else 0)
        spec = {"topology": str(cluster.topology.path), "seed": 7 + i, "prefix": f"q{i}u",
                "users": users, "arrivals_per_s": args.arrivals / args.arrive_s / args.procs,
                "go_at": go_at + i / max(1.0, args.arrivals / args.arrive_s),
                "max_s": args.max_s, "onsale": onsale, "show": show, "home": home,
                "home_nodes": cluster.nodes(home),
                "read_nodes": [cluster.nodes(r) for r in cluster.topology.regions],
                "gateway": gateway, "max_party": args.max_party, "workers": args.workers,
                "conns_per_node": args.conns_per_node, "stop_file": str(folder / "stop"),
                "out": str(folder / f"crowd{i}.json")}
        path = folder / f"spec{i}.json"
        path.write_text(json.dumps(spec))
        procs.append(await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "benchlib" / "queuegen.py"), str(path)))
    try:
        for proc in procs:
            await proc.wait()
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    return [json.loads((folder / f"crowd{i}.json").read_text()) for i in range(args.procs)]


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"answers": {}, "timings": {}, "outcomes": Counter(),
                           "sold_out_told": [], "admitted": [], "sold": [], "cpu_s": 0.0,
                           "unfinished": 0, "trails": {}}
    for part in parts:
        for kind, answers in part["answers"].items():
            out["answers"].setdefault(kind, Counter()).update(answers)
        for kind, pairs in part["timings"].items():
            out["timings"].setdefault(kind, []).extend(pairs)
        out["outcomes"].update(part["outcomes"])
        for key in ("sold_out_told", "admitted", "sold"):
            out[key].extend(part[key])
        out["trails"].update(part.get("trails", {}))
        out["cpu_s"] += part["cpu_s"]
        out["unfinished"] += part["unfinished"]
    return out


def latency(pairs: list[list[float]]) -> dict[str, Any]:
    ms = [p[1] for p in pairs]
    return {"count": len(ms), "p50_ms": round(percentile(ms, 50) or 0, 2),
            "p99_ms": round(percentile(ms, 99) or 0, 2)}


def fivexx(answers: dict[str, Counter[str]]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for kind, counts in answers.items():
        for answer, n in counts.items():
            if answer.startswith("5") or answer == "0" or answer.startswith("0 "):
                out[f"{kind} {answer}"] += n
    return dict(out)


async def queue_run(cluster: BenchCluster, http: aiohttp.ClientSession, show: int,
                    args: argparse.Namespace) -> dict[str, Any]:
    sale_after = args.arrive_s * 0.75 if args.sale_after_s is None else args.sale_after_s
    go_at = time.time() + 8.0  # the on-sale is made and seen everywhere meanwhile
    sale_at = datetime.fromtimestamp(go_at + sale_after, UTC)
    onsale = await create_onsale(cluster, http, show, sale_at, args)
    groups = cpu_groups(cluster)
    folder = Path(tempfile.mkdtemp(prefix="bookcluster-onsale-"))
    over = asyncio.Event()
    watcher = asyncio.create_task(watch_sold(cluster, show, over))
    log(f"Q  {args.arrivals:,} users over {args.arrive_s:g} s at on-sale {onsale} "
        f"(show {show}, sale {sale_after:g} s after the first arrival)")
    windows: dict[str, Any] = {}

    async def snapshots() -> None:
        await asyncio.sleep(max(0.0, go_at - time.time()))
        start = snapshot(groups)
        await asyncio.sleep(args.arrive_s)
        middle = snapshot(groups)
        windows["arrivals"] = (start, middle)
        windows["middle"] = middle

    snapper = asyncio.create_task(snapshots())
    clocked: dict[str, Any] = {}

    async def master_clock() -> None:
        """The home master's time per script from sale_at until the crowd ends (the
        slow log of every command, as the no-queue rush measures it)."""
        await asyncio.sleep(max(0.0, go_at + sale_after - 1.0 - time.time()))
        async with bestrush.ScriptClock(cluster, cluster.home_of(show)) as clock:
            try:
                await over.wait()
            finally:
                clocked["clock"] = clock
    clocker = asyncio.create_task(master_clock())
    try:
        parts = await crowd(cluster, args, onsale, show, go_at, folder)
    finally:
        over.set()
        sold_at = await watcher
        arrivals_done = snapper.done()
        snapper.cancel()
        await asyncio.gather(clocker, return_exceptions=True)
    end = snapshot(groups)
    result = merge(parts)
    client_s = result["cpu_s"]
    if arrivals_done:
        start, middle = windows["arrivals"]
        first = usage(start, middle, 0.0)
        second = usage(middle, end, 0.0)
    else:
        first = second = None
    timings = result["timings"]
    joins_ok = [p for p in timings.get("join", [])]
    polls = timings.get("poll", [])
    out: dict[str, Any] = {"onsale": onsale, "show": show, "arrivals": args.arrivals,
                           "arrive_s": args.arrive_s, "sale_after_s": sale_after,
                           "procs": args.procs, "answers": result["answers"],
                           "outcomes": dict(result["outcomes"]),
                           "unfinished_users": result["unfinished"],
                           "crowd_cpu_s": round(client_s, 2)}
    join_ok = sum(n for a, n in result["answers"].get("join", {}).items() if a == "200")
    if joins_ok:
        span = max(p[0] for p in joins_ok) - min(p[0] - p[1] / 1000 for p in joins_ok)
        out["arrivals_per_s_absorbed"] = round(join_ok / span, 1) if span > 0 else None
        out["last_join_s"] = max(p[0] for p in joins_ok)
    out["join"] = latency(joins_ok)
    out["poll"] = latency(polls)
    out["hold"] = latency(timings.get("hold", []))
    out["master_scripts"] = clocked["clock"].summary() if "clock" in clocked else None
    out["confirm"] = latency(timings.get("confirm", []))
    if first is not None and second is not None:
        polls_first = sum(1 for p in polls if p[0] <= args.arrive_s)
        polls_second = len(polls) - polls_first
        per_poll = cluster_cpu(second) / polls_second if polls_second else None
        joins = len(joins_ok)
        per_join = ((cluster_cpu(first) - polls_first * (per_poll or 0)) / joins
                    if joins else None)
        out["cpu"] = {"arrival_window": first, "after_arrivals": second,
                      "polls_in_arrival_window": polls_first,
                      "polls_after_arrivals": polls_second,
                      "cluster_ms_per_arrival": round(per_join * 1000, 3) if per_join else None,
                      "cluster_ms_per_poll": round(per_poll * 1000, 3) if per_poll else None,
                      "crowd_ms_per_request": round(
                          client_s * 1000 / max(1, sum(len(v) for v in timings.values())), 3)}
    out["sale_at_s"] = sale_after
    out["sold_out_s"] = round(sold_at - go_at - sale_after, 3) if sold_at else None
    told = sorted(result["sold_out_told"])
    out["told_sold_out"] = len(told)
    out["last_told_after_sold_out_s"] = (round(told[-1] - (sold_at - go_at), 3)
                                         if told and sold_at else None)
    out["admitted_users"] = len(result["admitted"])
    out["bought"] = len(result["sold"])
    out["fivexx_to_users"] = fivexx(result["answers"])
    out["series"] = series(timings, result["admitted"], result["sold"])
    out["hold_trails"] = result["trails"]
    out.update(await bestrush.seats_in_postgres(cluster, show))
    conn = await bestrush._connect(cluster, show)
    try:
        out["seats_sold"] = int(await conn.fetchval(
            "SELECT count(*) FROM show_seat WHERE show_id = $1 AND status = 'BOOKED'", show))
        out["show_seats"] = int(await conn.fetchval(
            "SELECT count(*) FROM show_seat WHERE show_id = $1 AND status <> 'UNAVAILABLE'",
            show))
        out["joins_stored"] = int(await conn.fetchval(
            "SELECT count(*) FROM onsale_join WHERE onsale_id = $1", onsale))
    finally:
        await conn.close()
    return out


async def evidence(cluster: BenchCluster, show: int, violations: list[Any],
                   trails: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """For each on-sale hold finding: the user's bookings and pass claim as PostgreSQL
    has them, and the answers their holds got (why a hold had no pass)."""
    users = sorted({v.detail.split(" of ")[1].split()[0] if v.check == "unadmitted_hold"
                    else v.detail.split()[0] for v in violations
                    if v.check in ("unadmitted_hold", "admitted_twice")})[:20]
    if not users:
        return []
    conn = await bestrush._connect(cluster, show)
    try:
        out = []
        for user in users:
            bookings = await conn.fetch(
                "SELECT id, status, created_at, updated_at, expires_at, hold_key "
                "FROM booking WHERE user_id = $1 ORDER BY created_at", user)
            claim = await conn.fetch(
                "SELECT booking_id, used_at FROM onsale_pass_use WHERE user_id = $1", user)
            out.append({"user": user, "bookings": [dict(b) for b in bookings],
                        "pass_use": [dict(c) for c in claim], "trail": trails.get(user)})
        return out
    finally:
        await conn.close()


def series(timings: dict[str, list[list[float]]], admitted: list[list[Any]],
           sold: list[list[Any]]) -> dict[str, Any]:
    """Per second: answers by kind, users admitted, seats sold."""
    out: dict[str, Any] = {}
    for kind, pairs in timings.items():
        per: Counter[int] = Counter(int(p[0]) for p in pairs)
        out[kind] = [per.get(s, 0) for s in range(max(per, default=-1) + 1)]
    per = Counter(int(a[1]) for a in admitted)
    out["admitted"] = [per.get(s, 0) for s in range(max(per, default=-1) + 1)]
    seats: Counter[int] = Counter()
    for _b, n, at in sold:
        seats[int(at)] += n
    out["seats_sold"] = [seats.get(s, 0) for s in range(max(seats, default=-1) + 1)]
    return out


def draw(results: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = results["queue"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for kind in ("join", "poll"):
        values = q["series"].get(kind, [])
        top.plot(range(len(values)), values, label=f"{kind}s answered /s")
    top.axvline(q["sale_at_s"], color="grey", linestyle="--", label="sale_at")
    top.set_ylabel("requests /s")
    top.legend()
    top.set_title(f"On-sale: {q['arrivals']:,} arrivals over {q['arrive_s']:g} s, "
                  f"1 show of {q.get('show_seats')} seats")
    for kind in ("admitted", "seats_sold"):
        values = q["series"].get(kind, [])
        running = [sum(values[: i + 1]) for i in range(len(values))]
        bottom.plot(range(len(running)), running, label=f"{kind} (running total)")
    bottom.axvline(q["sale_at_s"], color="grey", linestyle="--")
    bottom.set_xlabel("seconds from the first arrival")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _scripts(clock: dict[str, Any] | None) -> str:
    """The hold scripts' p50/p99 at the master, from a ScriptClock summary."""
    if not clock:
        return "not measured"
    got = [f"{name} {t['count']} x p50/p99 {t['p50_us']}/{t['p99_us']} us"
           for name, t in clock["scripts"].items() if name != "all scripts"]
    return "; ".join(got) + (" (slow log full)" if clock.get("full") else "")


def summary(results: dict[str, Any]) -> list[str]:
    q, r = results["queue"], results.get("no_queue")
    cpu = q.get("cpu") or {}
    lines = [
        f"arrivals: {q['arrivals']:,}, absorbed {q.get('arrivals_per_s_absorbed')} /s "
        f"(joins stored {q['joins_stored']:,})",
        f"CPU per arrival {cpu.get('cluster_ms_per_arrival')} ms, per poll "
        f"{cpu.get('cluster_ms_per_poll')} ms (cluster); crowd "
        f"{cpu.get('crowd_ms_per_request')} ms per request",
        f"join p50/p99 {q['join']['p50_ms']}/{q['join']['p99_ms']} ms ({q['join']['count']:,}); "
        f"poll p50/p99 {q['poll']['p50_ms']}/{q['poll']['p99_ms']} ms ({q['poll']['count']:,})",
        f"sale_at to sold out: {q['sold_out_s']} s; seats sold {q['seats_sold']}/"
        f"{q['show_seats']}; held twice {q['seats_held_twice']}; audit sold twice "
        f"{results['audit']['sold_twice']}",
        f"5xx answered to users: {sum(q['fivexx_to_users'].values())} "
        f"{q['fivexx_to_users'] or ''}",
        f"admission order violations (audit): {results['audit']['admission_order']}; "
        f"admitted twice {results['audit']['admitted_twice']}; unadmitted holds "
        f"{results['audit']['unadmitted_hold']}",
        f"told sold out: {q['told_sold_out']:,} (last {q['last_told_after_sold_out_s']} s "
        f"after); users unfinished {q['unfinished_users']:,}; outcomes {q['outcomes']}",
        f"hold p99 with the queue {q['hold']['p99_ms']} ms ({q['hold']['count']} holds); "
        f"at the home master {_scripts(q.get('master_scripts'))}"]
    if r:
        lines += [
            f"without the queue: hold p99 {r['hold_latency']['p99_ms']} ms, at the home "
            f"master {_scripts(r.get('master_scripts'))}; sold out "
            f"(last hold) in {r['sell_out_s']} s, {r['hold_requests']:,} holds, "
            f"{r['answers_503']} x 503, "
            f"{sum(n for k, n in r['answers'].items() if k.startswith('409'))} x 409, "
            f"answers {r['answers']}"]
    return lines


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    results: dict[str, Any] = {"started": started.isoformat(), "args": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    async with bench_cluster(spec=CATALOG, nodes=args.nodes_per_region, durable=not args.fast,
                             workers=True, wan_delay_ms=0, progress=log,
                             limits=LIMITS) as cluster:
        shows = [s for s in cluster.shows("north") if len(cluster.seats_of(s)) >= 1000]
        async with aiohttp.ClientSession() as http:
            results["queue"] = await queue_run(cluster, http, shows[0], args)
            report = await run_audit(cluster.topology)
            checks = Counter(v.check for v in report.violations)
            results["audit"] = {"violations": dict(checks),
                                "sold_twice": checks.get("sold_twice", 0),
                                "admission_order": checks.get("admission_order", 0),
                                "admitted_twice": checks.get("admitted_twice", 0),
                                "unadmitted_hold": checks.get("unadmitted_hold", 0),
                                "unreachable": report.unreachable,
                                "details": [v.detail for v in report.violations][:50]}
            results["audit"]["evidence"] = await evidence(
                cluster, results["queue"]["show"], report.violations,
                results["queue"].get("hold_trails", {}))
            if not args.no_rush:
                load = Load(duration_s=args.rush_s, max_requests=20_000, procs=2,
                            hold_clients=0, read_clients=0, rush_clients=0, wan_clients=0,
                            wan_requests=0, live_holds=0)
                log(f"R  without the queue: {args.rush_clients} clients at show {shows[1]}")
                results["no_queue"] = await bestrush.one_rush(
                    cluster, http, load, "best", shows[1], args.rush_clients, args.rush_s,
                    20_000, None)
    for text in summary(results):
        log("   " + text)
    args.results.mkdir(parents=True, exist_ok=True)
    name = f"onsale-{started.strftime('%Y%m%dT%H%M%SZ')}"
    (args.results / f"{name}.json").write_text(json.dumps(results, indent=1, default=str))
    draw(results, args.results / f"{name}.png")
    log(f"   wrote {args.results / name}.json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
