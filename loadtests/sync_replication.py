#!/usr/bin/env python3
"""What synchronous replication costs a confirm, measured in one run.

    .venv/bin/python loadtests/sync_replication.py [--confirms 300] [--clients 16] [--rounds 2]

Starts its own one-region cluster on free loopback ports (a PostgreSQL primary
and its standby under Patroni, durable: fsync on, two nodes, the gateway
simulator), then alternates synchronous replication on and off through Patroni's
dynamic configuration (PATCH /config) and, in each phase, measures
- raw commits: one connection committing single-row INSERTs in a row (latency),
  and 16 connections at once (throughput);
- confirms through a node: `--clients` clients confirming held, paid bookings
  (each booking held by its own user, its payment captured beforehand).
Prints one line per phase and the medians per mode. Every loop is bounded by
count. Stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cluster import patroni_api  # noqa: E402
from cluster.demo_catalog import CatalogSpec, build_catalog  # noqa: E402
from cluster.launcher import LocalCluster  # noqa: E402
from cluster.loopback import topology_yaml  # noqa: E402
from region_node.auth import mint  # noqa: E402
from router.registry import PG_TOOL_SESSION, connect_primary  # noqa: E402
from router.topology import Topology, load_topology  # noqa: E402

CATALOG = CatalogSpec(theatres_per_city=2, cities_per_region=3, days=1, shows_per_day=4)
LIMITS = """\
  user_writes: {per_second: 100000, burst: 100000}
  ip_writes: {per_second: 100000, burst: 100000}
  ip_reads: {per_second: 100000, burst: 100000}
"""
RAW_COMMITS = 500
RAW_PARALLEL = 16


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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

    async def set_sync(self, on: bool) -> None:
        """Switch and wait until the primary applies it (and, on, has a sync standby)."""
        await patroni_api.set_synchronous(self.region, self.topology.secrets, on)
        conn = await self.admin()
        try:
            for _ in range(120):
                names = await conn.fetchval("SHOW synchronous_standby_names")
                sync = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")
                if (on and names and sync) or (not on and not names):
                    return
                await asyncio.sleep(0.5)
        finally:
            await conn.close()
        raise RuntimeError(f"synchronous replication did not turn {'on' if on else 'off'}")

    async def raw(self) -> dict[str, float]:
        conn = await self.admin()
        try:
            await conn.execute("CREATE TABLE IF NOT EXISTS sync_probe (n bigint)")
            started = time.perf_counter()
            for n in range(RAW_COMMITS):
                await conn.execute("INSERT INTO sync_probe VALUES ($1)", n)
            serial_ms = (time.perf_counter() - started) * 1000 / RAW_COMMITS
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
        return {"commit_ms": serial_ms, "commits_per_s": per_s}

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

    async def confirms(self, http: aiohttp.ClientSession, bookings: list[dict[str, str]],
                       clients: int) -> dict[str, float]:
        todo = list(bookings)
        latencies: list[float] = []
        errors = 0

        async def client(n: int) -> None:
            nonlocal errors
            while todo:
                b = todo.pop()
                started = time.perf_counter()
                async with http.post(
                        f"{self.nodes[n % len(self.nodes)]}/booking/booking/{b['booking']}/confirm",
                        json={"payment_id": b["payment"]},
                        headers={"Authorization": f"Bearer {b['token']}",
                                 "Idempotency-Key": "k"}) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(clients)))
        elapsed = time.perf_counter() - started
        return {"confirms_per_s": len(bookings) / elapsed, "p50_ms": percentile(latencies, 0.5),
                "p99_ms": percentile(latencies, 0.99), "errors": errors}


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
                    for on in (True, False):
                        await bench.set_sync(on)
                        bookings = await bench.prepare(http, args.confirms)
                        row = {"sync": "on" if on else "off", **await bench.raw(),
                               **await bench.confirms(http, bookings, args.clients)}
                        rows.append(row)
                        print(f"sync {row['sync']:<3}  commit {row['commit_ms']:.2f} ms, "
                              f"{row['commits_per_s']:.0f} commits/s ({RAW_PARALLEL} conns); "
                              f"confirms {row['confirms_per_s']:.0f}/s, p50 "
                              f"{row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms "
                              f"({args.clients} clients, {row['errors']} not 200)", flush=True)
                await bench.set_sync(True)
            for mode in ("on", "off"):
                mine = [r for r in rows if r["sync"] == mode]
                print(f"median sync {mode}: " + ", ".join(
                    f"{k} {statistics.median(r[k] for r in mine):.2f}"
                    for k in ("commit_ms", "commits_per_s", "confirms_per_s", "p50_ms",
                              "p99_ms")))
        finally:
            launcher.stop()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--confirms", type=int, default=300, help="confirms per phase")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2, help="on/off pairs")
    return p.parse_args()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="bookcluster-sync-") as tmp:
        asyncio.run(main(parse_args(), write_topology(Path(tmp))))
