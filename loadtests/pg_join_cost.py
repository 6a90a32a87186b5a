"""PostgreSQL CPU per on-sale join on a scratch primary: one join a statement (as
before batching) vs batches (`bc_onsale_join_many`), side by side in one run.

Starts a plain PostgreSQL with the launcher's pieces (as pg_hold_cost.py does),
migrates it, makes two on-sales (one before its sale, one sealed) and measures the
backend's CPU (utime+stime from /proc, its own process) and wall time per join:
- before: `bc_onsale_join` then `SELECT * FROM onsale` per join (main's join path);
- a batch of 1 (`bc_onsale_join` alone, what a lone join costs now);
- batches of 8, 32, 128 and 256 (`join_many`).
Three rounds, each phase on fresh users; the median round is printed.

Run under the heavy lock: flock /tmp/heavy.lock timeout 900 python loadtests/pg_join_cost.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from bookcluster.booking.join_batches import join_many
from bookcluster.db.create import create_database
from bookcluster.db.migrate import migrate
from bookcluster.local import postgres_server
from bookcluster.local.binaries import find_binaries
from bookcluster.local.ports import free_ports
from bookcluster.local.supervisor import Supervisor
from bookcluster.stores.connections import PG_TOOL_SESSION, pg_dsn, pg_login
from bookcluster.stores.probe import wait_healthy
from bookcluster.topology.load import load_topology
from bookcluster.topology.secrets import generate_local

TICK = os.sysconf("SC_CLK_TCK")
JOINS = 4096  # per phase and round
BATCHES = (1, 8, 32, 128, 256)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def measure(pid: int, joins: int, per_call: int,
                  call: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """(backend CPU us, wall us) per join."""
    for _ in range(5):
        await call()
    cpu0, wall0 = cpu_s(pid), time.perf_counter()
    for _ in range(joins // per_call):
        await call()
    return ((cpu_s(pid) - cpu0) / joins * 1e6, (time.perf_counter() - wall0) / joins * 1e6)


async def run(conn: asyncpg.Connection, pid: int) -> None:
    await conn.execute("""
        INSERT INTO onsale (id, show_ids, opens_at, sale_at, window_s, max_party)
        VALUES ('os1-before', '{1}', now() - interval '1 hour', now() + interval '1 day', 600, 6),
               ('os2-sealed', '{2}', now() - interval '1 hour', now() - interval '1 minute', 600, 6)
    """)
    counter = iter(range(10**9))
    rounds: dict[str, list[tuple[float, float]]] = {}
    for rnd in range(3):
        for onsale in ("os1-before", "os2-sealed"):
            async def before(onsale: str = onsale) -> None:
                user = f"u{next(counter)}"
                row = await conn.fetchrow("SELECT * FROM bc_onsale_join($1, $2)", onsale, user)
                assert row is not None and row["state"] == "joined"
                await conn.fetchrow("SELECT * FROM onsale WHERE id = $1", onsale)

            rounds.setdefault(f"{onsale}: before (join + on-sale row, per join)", []).append(
                await measure(pid, JOINS, 1, before))
            for size in BATCHES:
                async def batch(onsale: str = onsale, size: int = size) -> None:
                    users = [f"u{next(counter)}" for _ in range(size)]
                    answers = await join_many(conn, onsale, users)
                    assert all(a.state == "joined" for a in answers)

                rounds.setdefault(f"{onsale}: batch of {size}", []).append(
                    await measure(pid, JOINS, size, batch))
        print(f"round {rnd + 1} done", flush=True)
    print(f"{'phase':60s} {'CPU us/join':>12s} {'wall us/join':>13s}")
    for name, got in rounds.items():
        cpu = statistics.median(c for c, _ in got)
        wall = statistics.median(w for _, w in got)
        print(f"{name:60s} {cpu:12.1f} {wall:13.1f}")
    print("joins stored:", await conn.fetchval("SELECT count(*) FROM onsale_join"))


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bookcluster-pgjoin-") as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)  # noqa: ASYNC240 - once, before anything runs
        generate_local(folder / "run")
        redis, replica, pg, node = free_ports(4)
        (folder / "topology.yaml").write_text(
            f"settings:\n  run_dir: {folder / 'run'}\n  durable: false\n"
            f"regions:\n  scratch:\n    redis:\n      master: 127.0.0.1:{redis}\n"
            f"      replicas:\n        scratch: 127.0.0.1:{replica}\n"
            f"    postgres:\n      primary: 127.0.0.1:{pg}\n"
            f"    nodes: [127.0.0.1:{node}]\n")
        topology = load_topology(folder / "topology.yaml")
        region = topology.region("scratch")
        binaries = find_binaries()
        user = postgres_server.pg_os_user()
        await postgres_server.init_primary(
            binaries, postgres_server.data_dir(topology, region, "pg-primary"), user,
            topology.secrets)
        (folder / "aux").mkdir()
        supervisor = Supervisor(folder / "aux")
        spec = postgres_server.primary_spec(binaries, topology, region, user)
        try:
            child = supervisor.start(spec)
            await wait_healthy({**spec.__dict__, "log_path": str(spec.log_path),
                                "address": spec.address.rsplit("/", 1)[0] + "/postgres"},
                               60, alive=lambda: child.popen.poll() is None,
                               secrets=topology.secrets)
            await create_database([region.pg_primary], topology.secrets)
            tool = await asyncpg.connect(pg_dsn(region.pg_primary),
                                         **pg_login(topology.secrets),
                                         server_settings=PG_TOOL_SESSION)
            await migrate(tool)
            await tool.close()
            conn = await asyncpg.connect(pg_dsn(region.pg_primary),
                                         **pg_login(topology.secrets))
            try:
                await run(conn, int(await conn.fetchval("SELECT pg_backend_pid()")))
            finally:
                await conn.close()
        finally:
            supervisor.stop()


if __name__ == "__main__":
    asyncio.run(main())
