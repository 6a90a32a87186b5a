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
import statistics
import time
from collections.abc import Awaitable, Callable

import asyncpg
from benchlib.scratch_pg import cpu_s, scratch_postgres

from bookcluster.booking.join_batches import join_many
from bookcluster.stores.connections import pg_dsn, pg_login

JOINS = 4096  # per phase and round
BATCHES = (1, 8, 32, 128, 256)


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
    async with scratch_postgres("bookcluster-pgjoin-") as (topology, region):
        conn = await asyncpg.connect(pg_dsn(region.pg_primary), **pg_login(topology.secrets))
        try:
            await run(conn, int(await conn.fetchval("SELECT pg_backend_pid()")))
        finally:
            await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
