#!/usr/bin/env python3
"""What synchronous replication costs a confirm, and what losing the standby costs,
measured in one run, in Patroni's non-strict and strict synchronous mode.

    .venv/bin/python loadtests/sync_replication.py [--confirms 300] [--clients 16]
        [--rounds 2] [--lost-s 8]

Starts its own one-region cluster on free loopback ports (a PostgreSQL primary
and its standby under Patroni, durable: fsync on, two nodes, the gateway
simulator), then alternates `synchronous_mode_strict` off and on through
Patroni's dynamic configuration (PATCH /config) and, in each phase, measures
- raw commits: one connection committing single-row INSERTs in a row (latency),
  16 connections at once (throughput), and the replication check a confirm makes
  before its 200 (`bookcluster/stores/replication.py`) after each serial commit;
- confirms through a node: `--clients` clients confirming held, paid bookings
  (each booking held by its own user, its payment captured beforehand);
- with `--lost-s`, once per mode: the standby SIGKILLed, then for that long
  clients hold seats and confirm bookings; how many got through, how fast, and
  what the others answered; then the standby is started again and every confirm
  that answered 503 is retried with its key until it answers 200 (the sales it
  committed while alone) or 30 s pass.
Prints one line per phase and the medians per mode. Every loop is bounded by
count or time. Stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import signal
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from benchlib.stats import percentile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bookcluster.local import faults, patroni  # noqa: E402
from bookcluster.local.launcher import LocalCluster  # noqa: E402
from bookcluster.local.loopback import topology_yaml  # noqa: E402
from bookcluster.node.auth import mint  # noqa: E402
from bookcluster.ops.demo_catalog import CatalogSpec, build_catalog  # noqa: E402
from bookcluster.stores import patroni_api, replication  # noqa: E402
from bookcluster.stores.connections import PG_TOOL_SESSION, connect_primary  # noqa: E402
from bookcluster.topology.load import load_topology  # noqa: E402
from bookcluster.topology.model import Topology  # noqa: E402

CATALOG = CatalogSpec(theatres_per_city=2, cities_per_region=3, days=1, shows_per_day=4)
LIMITS = """\
  user_writes: {per_second: 100000, burst: 100000}
  ip_writes: {per_second: 100000, burst: 100000}
  ip_reads: {per_second: 100000, burst: 100000}
"""
RAW_COMMITS = 500
RAW_PARALLEL = 16
LOST_HOLDS = 1000  # at most, per standby-lost phase
MODES = {False: "non-strict", True: "strict"}


class Bench:
    def __init__(self, topology: Topology, launcher: LocalCluster) -> None:
        self.topology = topology
        self.launcher = launcher
        self.region = topology.region("north")
        self.nodes = [f"http://{ep}" for ep in self.region.nodes]
        catalog = build_catalog(CATALOG, date.today())
        self.pairs = []
        for show in catalog.shows:
            free = [s.seat_id for s in catalog.seats if s.screen_id == show.screen_id
                    and not s.blocked]
            self.pairs += [(show.id, free[i:i + 2]) for i in range(0, len(free) - 1, 2)]
        self.used = 0

    async def admin(self) -> asyncpg.Connection:
        return await connect_primary(self.region.pg_members, self.topology.secrets,
                                     admin=True, server_settings=PG_TOOL_SESSION)

    async def set_mode(self, strict: bool) -> None:
        """Synchronous, strict or not; wait until the primary has its sync standby."""
        await patroni_api.set_synchronous(self.region, self.topology.secrets, True, strict)
        await self.wait_sync()

    async def wait_sync(self, timeout_s: float = 90) -> None:
        conn = await self.admin()
        try:
            for _ in range(int(timeout_s * 2)):
                names = await conn.fetchval("SHOW synchronous_standby_names")
                sync = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")
                if names and sync:
                    return
                await asyncio.sleep(0.5)
        finally:
            await conn.close()
        raise RuntimeError("no synchronous standby")

    async def standby(self) -> str:
        view = await patroni_api.any_cluster_view(self.region)
        names = [patroni.member_name(self.region, i) for i in range(2)]
        [member] = [m["name"] for m in view["members"] if m.get("role") != "leader"]
        return patroni.process_name(self.region, names.index(member))

    async def raw(self) -> dict[str, float]:
        conn = await self.admin()
        try:
            await conn.execute("CREATE TABLE IF NOT EXISTS sync_probe (n bigint)")
            started = time.perf_counter()
            for n in range(RAW_COMMITS):
                await conn.execute("INSERT INTO sync_probe VALUES ($1)", n)
            serial_ms = (time.perf_counter() - started) * 1000 / RAW_COMMITS
            probe_s, at_once = 0.0, 0
            for n in range(RAW_COMMITS):
                await conn.execute("INSERT INTO sync_probe VALUES ($1)", n)
                started = time.perf_counter()
                at_once += await replication.standby_flushed(conn)
                probe_s += time.perf_counter() - started
        finally:
            await conn.close()
        conns = [await self.admin() for _ in range(RAW_PARALLEL)]
        try:
            started = time.perf_counter()
            await asyncio.gather(*(self._commits(c) for c in conns))
            per_s = RAW_PARALLEL * RAW_COMMITS / (time.perf_counter() - started)
        finally:
            for c in conns:
                await c.close()
        return {"commit_ms": serial_ms, "commits_per_s": per_s,
                "check_ms": probe_s * 1000 / RAW_COMMITS, "flushed_at_once": at_once}

    @staticmethod
    async def _commits(conn: asyncpg.Connection) -> None:
        for n in range(RAW_COMMITS):
            await conn.execute("INSERT INTO sync_probe VALUES ($1)", n)

    async def prepare(self, http: aiohttp.ClientSession, count: int) -> list[dict[str, str]]:
        """`count` bookings held by their own users, each with a captured payment."""
        assert self.topology.payments is not None
        gateway = f"http://{self.topology.payments.gateway}"
        merchant = {"Authorization": f"Bearer {self.topology.secrets.get('gateway_api_key')}"}
        gate = asyncio.Semaphore(16)

        async def one(show: int, seats: list[str], user: str) -> dict[str, str]:
            token = mint(self.topology, user, 3600)
            async with gate:
                async with http.post(f"{self.nodes[0]}/booking/seats/{show}/lock",
                                     json={"seat_ids": seats},
                                     headers={"Authorization": f"Bearer {token}"}) as resp:
                    held = await resp.json()
                    assert resp.status == 201, held
                async with http.post(f"{gateway}/intents", headers=merchant, json={
                        "booking_id": held["booking_id"], "region": held["region"],
                        "amount_paise": held["amount_paise"], "capture_delay_ms": 0,
                        "outcome": "capture", "webhook": False}) as resp:
                    payment = str((await resp.json())["id"])
                for _ in range(100):
                    async with http.get(f"{gateway}/intents/{payment}",
                                        headers=merchant) as resp:
                        if (await resp.json())["status"] == "CAPTURED":
                            return {"booking": held["booking_id"], "token": token,
                                    "payment": payment}
                    await asyncio.sleep(0.05)
            raise RuntimeError(f"payment {payment} not captured")

        batch = self.pairs[self.used:self.used + count]
        self.used += count
        return list(await asyncio.gather(*(one(show, seats, f"sync-{self.used}-{i}")
                                           for i, (show, seats) in enumerate(batch))))

    async def confirm(self, http: aiohttp.ClientSession, b: dict[str, str],
                      node: int) -> tuple[int, str, float]:
        """One confirm: its status, its 503's outcome and component, its latency in ms."""
        started = time.perf_counter()
        async with http.post(
                f"{self.nodes[node % len(self.nodes)]}/booking/booking/{b['booking']}/confirm",
                json={"payment_id": b["payment"]},
                headers={"Authorization": f"Bearer {b['token']}",
                         "Idempotency-Key": "k"}) as resp:
            body = await resp.json(content_type=None)
        outcome = ""
        if resp.status == 503:  # "... cannot take writes now (<component>); ..."
            component = str(body.get("message", "")).partition("(")[2].partition(")")[0]
            outcome = f"{body.get('outcome')} ({component})"
        return resp.status, outcome, (time.perf_counter() - started) * 1000

    async def standby_lost(self, http: aiohttp.ClientSession, bookings: list[dict[str, str]],
                           clients: int, lost_s: float) -> dict[str, Any]:
        """SIGKILL the standby; `lost_s` of holds and confirms; start it again; retry the
        confirms that answered 503 until they answer 200."""
        victim = await self.standby()
        faults.signal_tree(self.launcher.child(victim).pid, signal.SIGKILL)
        killed = time.monotonic()
        answers: dict[str, collections.Counter[str]] = {
            "hold": collections.Counter(), "confirm": collections.Counter()}
        latencies: dict[str, list[float]] = {"hold": [], "confirm": []}
        todo = list(bookings)
        unknown: list[dict[str, str]] = []
        seats = self.pairs[self.used:self.used + LOST_HOLDS]
        self.used += LOST_HOLDS

        async def holder(n: int) -> None:
            while seats and time.monotonic() - killed < lost_s:
                show, two = seats.pop()
                token = mint(self.topology, f"lost-{self.used}-{len(seats)}", 3600)
                started = time.perf_counter()
                async with http.post(f"{self.nodes[n % 2]}/booking/seats/{show}/lock",
                                     json={"seat_ids": two},
                                     headers={"Authorization": f"Bearer {token}"}) as resp:
                    body = await resp.json(content_type=None)
                latencies["hold"].append((time.perf_counter() - started) * 1000)
                answers["hold"][f"{resp.status} {body.get('outcome') or ''}"
                                f" {body.get('error') or ''}".strip()] += 1
                await asyncio.sleep(0.05)

        async def confirmer(n: int) -> None:
            while todo and time.monotonic() - killed < lost_s:
                b = todo.pop()
                status, outcome, ms = await self.confirm(http, b, n)
                latencies["confirm"].append(ms)
                answers["confirm"][f"{status} {outcome}".strip()] += 1
                if status == 503:
                    unknown.append(b)
                await asyncio.sleep(0.05)

        await asyncio.gather(*(holder(n) for n in range(clients // 2)),
                             *(confirmer(n) for n in range(clients - clients // 2)))
        restarted = time.monotonic()
        await self.launcher.restart(victim)
        await self.wait_sync()
        synced_s = time.monotonic() - restarted
        resolved: collections.Counter[str] = collections.Counter()
        for b in unknown:
            for _ in range(30):
                status, outcome, _ = await self.confirm(http, b, 0)
                if status != 503:
                    break
                await asyncio.sleep(1)
            resolved[str(status)] += 1
        return {"answers": {k: dict(v) for k, v in answers.items()},
                "p50_ms": {k: percentile(v, 50) for k, v in latencies.items() if v},
                "standby_back_s": synced_s, "retried_503": dict(resolved)}

    async def confirms(self, http: aiohttp.ClientSession, bookings: list[dict[str, str]],
                       clients: int) -> dict[str, float]:
        todo = list(bookings)
        latencies: list[float] = []
        errors = 0

        async def client(n: int) -> None:
            nonlocal errors
            while todo:
                status, _, ms = await self.confirm(http, todo.pop(), n)
                errors += status != 200
                latencies.append(ms)

        started = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(clients)))
        elapsed = time.perf_counter() - started
        return {"confirms_per_s": len(bookings) / elapsed, "p50_ms": percentile(latencies, 50),
                "p99_ms": percentile(latencies, 99), "errors": errors}


def write_topology(folder: Path) -> Topology:
    folder.chmod(0o755)  # PostgreSQL's unprivileged user must reach its data
    path = folder / "topology.yaml"
    path.write_text(topology_yaml(folder / "run", regions=("north",), nodes=2,
                                  standby=("north",), durable=True, payments=True,
                                  limits=LIMITS))
    return load_topology(path)


async def main(args: argparse.Namespace, topology: Topology) -> None:
    if True:
        launcher = LocalCluster(topology, catalog=CATALOG, progress=lambda _: None)
        await launcher.start()
        try:
            bench = Bench(topology, launcher)
            rows: list[dict[str, Any]] = []
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(timeout=timeout,
                                             connector=aiohttp.TCPConnector(limit=0)) as http:
                for _ in range(args.rounds):
                    for strict in (False, True):
                        await bench.set_mode(strict)
                        bookings = await bench.prepare(http, args.confirms)
                        row = {"mode": MODES[strict], **await bench.raw(),
                               **await bench.confirms(http, bookings, args.clients)}
                        rows.append(row)
                        print(f"{row['mode']:<10}  commit {row['commit_ms']:.2f} ms, "
                              f"{row['commits_per_s']:.0f} commits/s ({RAW_PARALLEL} conns), "
                              f"check {row['check_ms']:.2f} ms (flushed at once "
                              f"{row['flushed_at_once']}/{RAW_COMMITS}); "
                              f"confirms {row['confirms_per_s']:.0f}/s, p50 "
                              f"{row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms "
                              f"({args.clients} clients, {row['errors']} not 200)", flush=True)
                for strict in (False, True) if args.lost_s > 0 else ():
                    await bench.set_mode(strict)
                    bookings = await bench.prepare(http, args.confirms)
                    lost = await bench.standby_lost(http, bookings, args.clients, args.lost_s)
                    print(f"{MODES[strict]:<10}  standby SIGKILLed for {args.lost_s:.0f} s: "
                          f"{json.dumps(lost)}", flush=True)
                await bench.set_mode(False)
            for mode in MODES.values():
                mine = [r for r in rows if r["mode"] == mode]
                print(f"median {mode}: " + ", ".join(
                    f"{k} {statistics.median(r[k] for r in mine):.2f}"
                    for k in ("commit_ms", "commits_per_s", "check_ms", "confirms_per_s",
                              "p50_ms", "p99_ms")))
        finally:
            launcher.stop()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--confirms", type=int, default=300, help="confirms per phase")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2, help="non-strict/strict pairs")
    p.add_argument("--lost-s", type=float, default=8.0,
                   help="seconds of load with the standby killed, per mode (0: skip)")
    return p.parse_args()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="bookcluster-sync-") as tmp:
        asyncio.run(main(parse_args(), write_topology(Path(tmp))))
