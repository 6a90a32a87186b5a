#!/usr/bin/env python3
"""Do a region's workers keep up? Pay -> confirm at a steady rate, workers on.

    .venv/bin/python loadtests/worker_drain.py [--rate 150] [--duration 20] [--regions north]

Starts a fresh local cluster with its workers (3 regions x `--nodes-per-region`,
the gateway simulator), holds `rate x duration` bookings of fresh users in the
chosen regions (not measured), then starts one booking's flow every 1/rate s
for `--duration` s: `POST /pay` (the gateway captures after its capture delay
and sends its webhook, a `payment_event` job), then, after that delay (the user at
the checkout page), `POST /confirm` with the payment id, again every 0.1 s while
it answers 402 (not captured yet). Every
sale writes a `ticket` and a `notification` job. Flows that would exceed
`--in-flight` are not started (counted as `skipped`): the rate is a target.

Every second it prints the confirms accepted, the jobs each region's worker
finished per kind, and the backlog: jobs waiting in the outbox (the queue) plus
jobs taken or backed off (active, delayed). After the load it waits (at most `--drain-timeout`
s) for the backlog to empty. The summary gives confirms/s accepted, jobs/s
drained per kind during the load, the backlog at its peak and at the end of the
load, how long the rest took to drain, and CPU ms per confirm of the workers
(net of their idle use, measured first) and of every other process group.
Bounded in count (`rate x duration`, at most `--max-confirms`) and time.

The job queue on the outbox (PostgreSQL) against BullMQ on the seat master, three
pairs run one after the other (`--rate 80 --duration 12`, 960 confirms each, machine
shared with other work: the nodes' group, which the change does not touch, varied
by up to 27 % between runs), CPU ms per confirm, BullMQ -> outbox: Redis masters
1.66-1.82 -> 0.66-0.81, their replicas 1.42-1.61 -> 0.60-0.76, workers 8.35-9.32 ->
7.06-8.98, PostgreSQL 5.12-5.93 -> 6.21-7.45; workers + stores 16.6-18.7 ->
14.5-18.0; jobs drained after the load 96-103 -> 118-123 per kind a second.

    .venv/bin/python loadtests/worker_drain.py --render 2000

only times the ticket picture (`bookcluster/booking/ticket_image.py`: QR, text,
PNG) in this process: CPU ms per ticket, no cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
import timeit
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from benchlib import log
from benchlib.backlog import Backlog
from benchlib.cpu import cpu_groups, cpu_seconds
from benchlib.local import BenchCluster, bench_cluster
from benchlib.phases import SeatPool
from benchlib.tokens import bearer, token_for
from prometheus_client.parser import text_string_to_metric_families

from bookcluster.ops.demo_catalog import CatalogSpec
from bookcluster.stores.connections import make_redis

# ~10,000 seats for sale per region: 5,000 two-seat bookings.
CATALOG = CatalogSpec(theatres_per_city=2, cities_per_region=2, days=1, shows_per_day=4)
SEATS_PER_BOOKING = 2
PREP_CONCURRENCY = 32
RETRY_402_S = 0.1
RETRIES_402 = 50  # 5 s: the simulator captures after its capture delay (300 ms)
Jobs = dict[str, float]  # kind -> jobs finished; "<kind>:s" -> seconds their handlers ran
MIN_BACKLOG_TO_TIME = 300  # jobs
SETTLE_S = 6.0  # > the reconciler's RECENT window (5 s)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=150.0, help="flows started per second (150)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load (20)")
    p.add_argument("--regions", default="north",
                   help="comma-separated home regions of the bookings (north: one worker)")
    p.add_argument("--nodes-per-region", type=int, default=2)
    p.add_argument("--in-flight", type=int, default=400, help="flows in flight at most (400)")
    p.add_argument("--max-confirms", type=int, default=5000)
    p.add_argument("--idle", type=float, default=3.0,
                   help="seconds of idle workers measured before the load (3)")
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument("--fast", action="store_true",
                   help="durable: false (no fsync / synchronous_commit, no AOF)")
    p.add_argument("--json", type=Path, help="also write the summary and samples here")
    p.add_argument("--render", type=int, metavar="N",
                   help="only time N ticket pictures in this process, then exit")
    args = p.parse_args(argv)
    args.region_list = [r.strip() for r in args.regions.split(",") if r.strip()]
    args.count = min(args.max_confirms, int(args.rate * args.duration))
    if args.count < 1 or args.rate <= 0:
        p.error("--rate x --duration must make at least one confirm")
    return args


class Probe:
    """Reads the backlog and the workers' counters and CPU of the chosen regions."""

    def __init__(self, cluster: BenchCluster, regions: list[str]) -> None:
        self.cluster = cluster
        self.regions = regions
        self.groups = cpu_groups(cluster)
        self.worker_pids = {"workers": self.groups.get("workers", [])}
        self._backlog = Backlog(cluster, regions)

    async def __aenter__(self) -> Probe:
        await self._backlog.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._backlog.__aexit__(*exc)

    async def backlog(self) -> dict[str, int]:
        """Jobs waiting, and jobs taken or backed off, over the chosen regions."""
        counts = await self._backlog.read()
        return {"outbox": counts["outbox"], "queued": counts["queued"],
                "total": counts["outbox"] + counts["queued"]}

    async def jobs_done(self, http: aiohttp.ClientSession) -> Jobs:
        """Jobs the chosen regions' workers finished, by kind (any outcome); and, under
        `<kind>:s`, the seconds their handlers ran (wall time, not CPU)."""
        done: Jobs = defaultdict(float)
        for region in self.regions:
            worker = self.cluster.topology.region(region).worker
            assert worker is not None, "the cluster runs with workers"
            async with http.get(f"http://{worker.host}:{worker.port}/metrics") as resp:
                text = await resp.text()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "bookcluster_jobs_total":
                        done[sample.labels["kind"]] += int(sample.value)
                    elif sample.name == "bookcluster_job_seconds_sum":
                        done[sample.labels["kind"] + ":s"] += sample.value
        return done

    def cpu(self) -> dict[str, float]:
        return cpu_seconds(self.groups)

    async def redis_calls(self) -> Counter[str]:
        """Commands run so far by the chosen regions' Redis masters (all clients)."""
        calls: Counter[str] = Counter()
        topology = self.cluster.topology
        for region in self.regions:
            client = make_redis(topology.region(region).redis_master, topology.secrets)
            try:
                stats = await client.info("commandstats")
            finally:
                await client.aclose()
            for name, value in stats.items():
                calls[name.removeprefix("cmdstat_")] += int(value["calls"])
        return calls


async def hold_all(cluster: BenchCluster, http: aiohttp.ClientSession, regions: list[str],
                   count: int) -> list[tuple[str, str, str]]:
    """`count` two-seat holds by fresh users, spread over `regions`: (booking, token, node)."""
    pool = SeatPool(cluster)
    wanted = []
    for i in range(count):  # a show's last seat may come alone: still one booking
        region = regions[i % len(regions)]
        show, seats = next(iter(pool.take(region, SEATS_PER_BOOKING).items()))
        wanted.append((region, show, seats))
    gate = asyncio.Semaphore(PREP_CONCURRENCY)
    run = uuid.uuid4().hex[:8]

    async def one(i: int, region: str, show: int, seats: list[str]) -> tuple[str, str, str]:
        nodes = cluster.nodes(region)
        node = nodes[i % len(nodes)]
        token = token_for(cluster.topology, f"drain-{run}-{i}")
        async with gate, http.post(f"{node}/booking/seats/{show}/lock",
                                   json={"seat_ids": seats}, headers=bearer(token)) as resp:
            body = await resp.json()
            if resp.status != 201:
                raise RuntimeError(f"hold {i}: {resp.status} {body}")
        return body["booking_id"], token, node

    return list(await asyncio.gather(*(one(i, *w) for i, w in enumerate(wanted))))


class Flows:
    """Pay -> confirm for each booking, one started every 1/rate s."""

    def __init__(self, http: aiohttp.ClientSession, in_flight: int,
                 capture_delay_s: float) -> None:
        self.http = http
        self.capture_delay_s = capture_delay_s
        self.gate = asyncio.Semaphore(in_flight)
        self.statuses: Counter[str] = Counter()
        self.confirmed = 0
        self.skipped = 0
        self.retries_402 = 0

    async def one(self, booking: str, token: str, node: str) -> None:
        try:
            async with self.http.post(f"{node}/booking/booking/{booking}/pay",
                                      headers=bearer(token)) as resp:
                body = await resp.json()
            if resp.status != 201:
                self.statuses[f"pay {resp.status} {body.get('error')}"] += 1
                return
            headers = bearer(token, **{"Idempotency-Key": uuid.uuid4().hex})
            await asyncio.sleep(self.capture_delay_s)
            for _ in range(RETRIES_402):
                async with self.http.post(f"{node}/booking/booking/{booking}/confirm",
                                          json={"payment_id": body["payment_id"]},
                                          headers=headers) as resp:
                    answer = await resp.json()
                if resp.status != 402:
                    break
                self.retries_402 += 1
                await asyncio.sleep(RETRY_402_S)
            self.statuses[f"confirm {resp.status} {answer.get('error', '')}".strip()] += 1
            if resp.status == 200:
                self.confirmed += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.statuses[f"exception {type(exc).__name__}"] += 1
        finally:
            self.gate.release()

    async def run(self, bookings: list[tuple[str, str, str]], rate: float) -> float:
        """Start the flows on schedule; returns when the last one ended (elapsed s)."""
        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for i, item in enumerate(bookings):
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self.gate.locked():  # the cluster is behind: do not queue more
                    self.skipped += 1
                    continue
                await self.gate.acquire()
                group.create_task(self.one(*item))
        return time.perf_counter() - started


def rates(done: Jobs, before: Jobs, seconds: float) -> dict[str, float]:
    return {k: round((done[k] - before[k]) / seconds, 1)
            for k in sorted(done) if ":" not in k and done[k] - before[k] and seconds > 0}


def handler_ms(done: Jobs, before: Jobs) -> dict[str, float]:
    """Mean wall ms a job's handler ran, by kind."""
    return {k: round((done[f"{k}:s"] - before[f"{k}:s"]) / (done[k] - before[k]) * 1000, 1)
            for k in sorted(done) if ":" not in k and done[k] - before[k]}


async def sample(probe: Probe, http: aiohttp.ClientSession, flows: Flows, started: float,
                 samples: list[dict[str, Any]], stop: asyncio.Event) -> None:
    """Every second, one line: confirms and jobs done in that second, the backlog."""
    last_jobs = await probe.jobs_done(http)
    last_confirmed, last_t = 0, time.perf_counter()
    log("     t  confirms/s  backlog (outbox+queued)  jobs/s by kind")
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass
        now = time.perf_counter()
        jobs, backlog = await probe.jobs_done(http), await probe.backlog()
        row = {"t": round(now - started, 1), "confirms_per_s": round(
                   (flows.confirmed - last_confirmed) / (now - last_t), 1),
               "backlog": backlog, "jobs_per_s": rates(jobs, last_jobs, now - last_t)}
        samples.append(row)
        log(f"  {row['t']:5.1f}  {row['confirms_per_s']:10.1f}  {backlog['total']:7d} "
            f"({backlog['outbox']}+{backlog['queued']}){'':8}{row['jobs_per_s']}")
        last_jobs, last_confirmed, last_t = jobs, flows.confirmed, now


async def drained(probe: Probe, http: aiohttp.ClientSession, want: Jobs,
                  timeout_s: float) -> float | None:
    """Seconds until the backlog is empty and the jobs `want` ran; None on timeout."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        done = await probe.jobs_done(http)
        if (await probe.backlog())["total"] == 0 and all(done[k] >= n for k, n in want.items()):
            return round(time.perf_counter() - started, 2)
        await asyncio.sleep(0.2)
    return None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    log(f"cluster: 3 regions x {args.nodes_per_region} nodes, workers on, "
        f"durable={not args.fast}")
    async with bench_cluster(spec=CATALOG, nodes=args.nodes_per_region, durable=not args.fast,
                             workers=True, wan_delay_ms=0,
                             progress=lambda m: None) as cluster, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                  timeout=aiohttp.ClientTimeout(total=30)) as http, \
            Probe(cluster, args.region_list) as probe:
        log(f"holding {args.count:,} bookings in {args.regions} (not measured)")
        bookings = await hold_all(cluster, http, args.region_list, args.count)
        # The reconciler looks at shows changed in the last seconds: let the holds age
        # out of its window, so that `idle` is idle.
        await asyncio.sleep(SETTLE_S)
        log(f"idle workers for {args.idle:g} s")
        cpu0, t0 = probe.cpu(), time.perf_counter()
        await asyncio.sleep(args.idle)
        idle_cpu_per_s = (probe.cpu()["workers"] - cpu0["workers"]) / (time.perf_counter() - t0)
        jobs0, cpu0, redis0 = await probe.jobs_done(http), probe.cpu(), await probe.redis_calls()
        log(f"load: {args.rate:g} pay->confirm flows/s for {args.duration:g} s, "
            f"{args.count:,} bookings")
        payments = cluster.topology.payments
        assert payments is not None, "the bench cluster runs the gateway simulator"
        flows = Flows(http, args.in_flight, payments.capture_delay_s)
        samples: list[dict[str, Any]] = []
        stop = asyncio.Event()
        started = time.perf_counter()
        sampler = asyncio.create_task(sample(probe, http, flows, started, samples, stop))
        try:
            load_s = await flows.run(bookings, args.rate)
            jobs1, backlog_end = await probe.jobs_done(http), await probe.backlog()
            # Each confirm makes a ticket and a notification, each payment a payment_event.
            want = {k: jobs0[k] + flows.confirmed
                    for k in ("ticket", "notification", "payment_event")}
            drain_s = await drained(probe, http, want, args.drain_timeout)
        finally:
            stop.set()
            await sampler
        total_s = time.perf_counter() - started
        cpu1, jobs2, redis1 = probe.cpu(), await probe.jobs_done(http), await probe.redis_calls()
    used = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
    confirms = max(1, flows.confirmed)
    worker_net = used["workers"] - idle_cpu_per_s * total_s
    peak = max(samples, key=lambda s: s["backlog"]["total"])["backlog"] if samples else {}
    return {
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": {"rate": args.rate, "duration_s": args.duration, "regions": args.region_list,
                   "nodes_per_region": args.nodes_per_region, "durable": not args.fast,
                   "bookings": args.count},
        "confirms": flows.confirmed, "skipped": flows.skipped,
        "retries_402": flows.retries_402, "answers": dict(flows.statuses),
        "load_s": round(load_s, 2),
        "confirms_per_s": round(flows.confirmed / load_s, 1),
        "drained_per_s_during_load": rates(jobs1, jobs0, load_s),
        "backlog_peak": peak, "backlog_at_load_end": backlog_end,
        "drain_after_load_s": drain_s,
        # With the load gone the workers have the machine: what they can do at most,
        # if the backlog was big enough to time (else None).
        "drained_per_s_after_load": rates(jobs2, jobs1, drain_s)
        if drain_s and backlog_end["total"] >= MIN_BACKLOG_TO_TIME else None,
        "jobs": {k: jobs2[k] - jobs0[k] for k in sorted(jobs2)
                 if ":" not in k and jobs2[k] - jobs0[k]},
        "handler_wall_ms": handler_ms(jobs2, jobs0),
        "worker_idle_cpu_ms_per_s": round(idle_cpu_per_s * 1000, 1),
        "worker_cpu_ms_per_confirm": round(worker_net / confirms * 1000, 2),
        "worker_cpu_ms_per_confirm_gross": round(used["workers"] / confirms * 1000, 2),
        "cpu_ms_per_confirm": {k: round(v / confirms * 1000, 2) for k, v in sorted(used.items())},
        # Every client's, nodes' too; the probe's own INFO and counts are a few a second.
        "redis_calls_per_confirm": {k: round(n / confirms, 2)
                                    for k, n in (redis1 - redis0).most_common(12)},
        "samples": samples,
    }


def summary(r: dict[str, Any]) -> str:
    drain = "never (timeout)" if r["drain_after_load_s"] is None else f"{r['drain_after_load_s']} s"
    return "\n".join([
        f"confirms accepted     {r['confirms']:,} in {r['load_s']} s = {r['confirms_per_s']}/s "
        f"(skipped {r['skipped']}, 402 retries {r['retries_402']})",
        f"answers               {r['answers']}",
        f"drained during load   {r['drained_per_s_during_load']} jobs/s",
        f"handler wall ms       {r['handler_wall_ms']} (mean per job, of its worker)",
        f"backlog               peak {r['backlog_peak'].get('total')}, at load end "
        f"{r['backlog_at_load_end']['total']}; rest drained in {drain}"
        + (f" at {r['drained_per_s_after_load']} jobs/s" if r["drained_per_s_after_load"] else ""),
        f"worker CPU / confirm  {r['worker_cpu_ms_per_confirm']} ms net of idle "
        f"({r['worker_idle_cpu_ms_per_s']} ms/s), {r['worker_cpu_ms_per_confirm_gross']} gross",
        f"CPU ms / confirm      {r['cpu_ms_per_confirm']} (pay + confirm + jobs, "
        "load and drain)",
        f"Redis calls / confirm {r['redis_calls_per_confirm']} (home masters, all clients)",
    ])


def render_cost(count: int) -> dict[str, float]:
    """CPU ms per ticket picture and per stage (median of 5 rounds of `count`)."""
    from bookcluster.booking import ticket_image
    from bookcluster.booking.signing import ticket_reference

    reference = ticket_reference("bench-secret", "b1001-0123456789abcdef")
    lines = ["A Movie (Hindi, UA)", "Mon 24 Nov 2026, 6:30 pm IST",
             "A Theatre, Bengaluru - Audi 2", "Seats: A1, A2", "Paid: ₹500.00",
             f"Ref: {reference}"]  # as `tickets.ticket_lines` writes them
    image = ticket_image.render(reference, lines)
    stages = {"qr": lambda: ticket_image.qr_modules(reference),
              "render": lambda: ticket_image.render(reference, lines),
              "png": lambda: ticket_image.png(image),
              "ticket": lambda: ticket_image.png(ticket_image.render(reference, lines))}
    out = {}
    for name, stage in stages.items():
        # CPU per call, median of 5 rounds (timeit, with the garbage collector left on)
        rounds = timeit.repeat(stage, setup=gc.enable, timer=time.process_time,
                               number=count, repeat=5)
        out[f"{name}_ms"] = round(statistics.median(rounds) / count * 1000, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        print(json.dumps(render_cost(args.render), indent=2))
        return 0
    # The default loop, not uvloop: the launcher runs initdb with `user=`.
    result = asyncio.run(run(args))
    print()
    print(summary(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
