"""PostgreSQL CPU per hold statement on a scratch primary, side by side in one run.

Starts a plain PostgreSQL with the launcher's own pieces (as tests/integration/db/
test_migrate.py does), migrates it, seeds one owned theatre with shows of SEATS seats,
and measures the backend's CPU (utime+stime from /proc, its own process) per call:
- `bc_record_hold` (one 2-seat hold a statement) with plan_cache_mode auto and
  force_generic_plan;
- `bc_sell` (the confirm's sale) and the sweeper's, reconciler's and cap queries, auto
  vs generic;
- `bc_record_holds` with batches of 1, 8 and 32;
- EXPLAIN of the seats-per-show cap query with and without the live-holds indexes.

Run under the heavy lock: flock /tmp/heavy.lock timeout 900 python loadtests/pg_hold_cost.py
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from benchlib.scratch_pg import cpu_s, scratch_postgres

from bookcluster.booking import ledger
from bookcluster.stores.connections import PG_TOOL_SESSION, pg_dsn, pg_login

SHOWS = 40
SEATS = 2000
HOLDS = 1200  # per measured phase
CAPS = ledger.HoldCaps(max_hold=timedelta(minutes=30), max_seats=10, max_holds=4,
                       max_address_seats=100, max_address_holds=100)


async def seed(conn: asyncpg.Connection) -> None:
    await conn.execute("""
        INSERT INTO city VALUES ('c', 'City', 'State');
        INSERT INTO theatre VALUES ('t', 'c', 'Theatre', 'Road');
        INSERT INTO screen VALUES ('s', 't', 'Screen');
        INSERT INTO movie VALUES ('m', 'Movie', 'hi', 120, 'U');
        INSERT INTO theatre_owner (theatre_id, state, epoch) VALUES ('t', 'OWNED', 1)""")
    await conn.execute("INSERT INTO seat SELECT 's', 'S' || i, 'A', i, 'std', 20000 "
                       "FROM generate_series(1, $1) i", SEATS)
    await conn.execute("INSERT INTO show SELECT i, 's', 'm', now() + interval '1 day' "
                       "FROM generate_series(1, $1) i", SHOWS)
    await conn.execute("INSERT INTO show_seat (show_id, seat_id) SELECT sh.id, st.seat_id "
                       "FROM show sh, seat st")
    # History, as a region that sold for a while has: confirmed bookings in every show.
    await conn.execute("""
        INSERT INTO booking (id, user_id, show_id, status, fence_token, amount_paise,
                             expires_at, hold_deadline, updated_at)
        SELECT 'old-' || sh || '-' || i, 'olduser' || (i % 500), sh, 'CONFIRMED', i, 1,
               now(), now(), now() - interval '1 hour'
        FROM generate_series(1, $1) sh, generate_series(1, 400) i""", SHOWS)
    await conn.execute("""
        INSERT INTO booking_seat (booking_id, show_id, seat_id, price_paise)
        SELECT b.id, b.show_id, 'x' || b.id, 1 FROM booking b""")
    # Live holds of other users, as a busy region has (on seats the test never holds).
    await conn.execute("""
        INSERT INTO booking (id, user_id, show_id, status, fence_token, amount_paise,
                             expires_at, hold_deadline, client_address)
        SELECT 'live-' || i, 'liveuser' || i, 1 + i % $1, 'INITIATED', i, 1,
               now() + interval '1 day', now() + interval '1 day', '10.9.0.' || (i % 200)
        FROM generate_series(1, 1000) i""", SHOWS)
    await conn.execute("""
        INSERT INTO booking_seat (booking_id, show_id, seat_id, price_paise)
        SELECT b.id, b.show_id, 'x' || b.id, 1 FROM booking b WHERE b.id LIKE 'live-%'""")
    await conn.execute("ANALYZE")


ROOT = Path(__file__).parents[1]
NEW_INDEXES = (ROOT / "bookcluster/db/migrations/0015_live_holds_by_user.sql").read_text()
NEW_HOLDS = (ROOT / "bookcluster/db/functions/holds.sql").read_text()
# Before: the hold function and indexes of the commit this branch started from (or of
# the file named by BEFORE_HOLDS_SQL).
OLD_HOLDS = Path(os.environ.get("BEFORE_HOLDS_SQL",
                                "/work/main/bookcluster/db/functions/holds.sql")).read_text()


async def indexes(conn: asyncpg.Connection, new: bool) -> None:
    """The hold function and booking indexes of this branch (new) or of before."""
    there = await conn.fetchval("SELECT to_regclass('booking_live_by_user') IS NOT NULL")
    if there != new:
        await conn.execute(NEW_INDEXES if new else "DROP INDEX booking_live_by_user")
    await conn.execute(NEW_HOLDS if new else OLD_HOLDS)


async def reset(conn: asyncpg.Connection) -> None:
    await conn.execute("""
        DELETE FROM booking_seat WHERE booking_id NOT LIKE 'old-%' AND booking_id NOT LIKE 'live-%';
        DELETE FROM payment; DELETE FROM mirror_change; DELETE FROM outbox;
        DELETE FROM booking WHERE id NOT LIKE 'old-%' AND id NOT LIKE 'live-%';
        UPDATE show_seat SET status = 'AVAILABLE', hold_booking_id = NULL,
               hold_expires_at = NULL, booked_booking_id = NULL
        WHERE status <> 'AVAILABLE'""")
    await conn.execute("VACUUM ANALYZE booking, booking_seat, show_seat")


class Holds:
    """2-seat holds, each of a new user, spread over the shows."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.n = 0

    def next(self) -> ledger.HoldItem:
        i = self.n
        self.n += 1
        show = 1 + i % SHOWS
        k = i // SHOWS
        seats = sorted([f"S{2 * k + 1}", f"S{2 * k + 2}"])
        return ledger.HoldItem(
            show=show, seats=seats, booking=f"{self.tag}-{i}", user=f"{self.tag}u{i}",
            expires=datetime.now(UTC) + timedelta(minutes=10), prices=[20000, 20000],
            hold_key=None, epoch=1, address=f"10.0.{i % 250}.1")


async def measure(conn: asyncpg.Connection, pid: int, calls: int, one) -> float:  # type: ignore[no-untyped-def]
    for _ in range(20):  # warm the plan caches
        await one()
    start = cpu_s(pid)
    for _ in range(calls):
        await one()
    return (cpu_s(pid) - start) / calls * 1000


async def main() -> None:
    async with scratch_postgres("bookcluster-pgcost-") as (topology, region):
        tool = await asyncpg.connect(pg_dsn(region.pg_primary), **pg_login(topology.secrets),
                                     server_settings=PG_TOOL_SESSION)
        try:
            await seed(tool)
            await run(tool, region, topology)
        finally:
            await tool.close()


async def run(tool: asyncpg.Connection, region, topology) -> None:  # type: ignore[no-untyped-def]
    async def session(mode: str) -> tuple[asyncpg.Connection, int]:
        conn = await asyncpg.connect(pg_dsn(region.pg_primary), **pg_login(topology.secrets),
                                     server_settings={"plan_cache_mode": mode})
        return conn, int(await conn.fetchval("SELECT pg_backend_pid()"))

    rounds: dict[str, list[float]] = {}

    def note(name: str, ms: float) -> None:
        rounds.setdefault(name, []).append(ms)

    for rnd in range(3):
        for new, mode in ((False, "auto"), (True, "auto"), (True, "force_generic_plan")):
            await indexes(tool, new)
            await reset(tool)
            conn, pid = await session(mode)
            mode = f"{mode}, {'new' if new else 'old'} indexes"
            holds = Holds(f"{mode[:4]}{int(new)}{rnd}")

            async def single(conn=conn, holds=holds) -> None:  # type: ignore[no-untyped-def]
                record = await ledger.record_item(conn, holds.next(), CAPS)
                assert record.token is not None, record

            note(f"hold, single statement, {mode}", await measure(conn, pid, HOLDS, single))
            # The sale of what was held (bc_sell), one booking a call.
            booked = iter(range(20, HOLDS + 20))

            async def sell(conn=conn, holds=holds, booked=booked) -> None:  # type: ignore[no-untyped-def]
                i = next(booked)
                item_id = f"{holds.tag}-{i}"
                async with conn.transaction():
                    sale = await ledger.sell(conn, show=1 + i % SHOWS, booking=item_id,
                                             payment=f"p-{item_id}", payment_status="CAPTURED",
                                             amount=40000)
                assert sale.outcome == "sold", sale

            note(f"sale (bc_sell), {mode}", await measure(conn, pid, 400, sell))
            since = datetime.now(UTC) - timedelta(seconds=5)

            async def recent(conn=conn, since=since) -> None:  # type: ignore[no-untyped-def]
                await conn.fetch("SELECT DISTINCT b.show_id FROM booking b "
                                 "WHERE b.updated_at > $1", since)

            note(f"reconciler: shows changed recently, {mode}",
                 await measure(conn, pid, 200, recent))

            async def seats(conn=conn) -> None:  # type: ignore[no-untyped-def]
                await conn.fetch(
                    "SELECT show_id, seat_id, status, hold_booking_id, hold_expires_at, "
                    "booked_booking_id, updated_at > now() - $2::interval AS settling "
                    "FROM show_seat WHERE show_id = ANY($1::bigint[]) "
                    "AND (status <> 'AVAILABLE' OR updated_at > now() - $2::interval)",
                    [1, 2, 3], timedelta(seconds=2))

            note(f"reconciler: seats of 3 shows, {mode}", await measure(conn, pid, 200, seats))

            async def sweep(conn=conn) -> None:  # type: ignore[no-untyped-def]
                async with conn.transaction():
                    await conn.fetch(
                        "SELECT b.id FROM booking b WHERE b.status = 'INITIATED' "
                        "AND (b.expires_at < now() OR b.id = ANY($1::text[])) "
                        "ORDER BY b.expires_at LIMIT 500 FOR UPDATE OF b SKIP LOCKED", [])

            note(f"sweeper: lapsed holds, {mode}", await measure(conn, pid, 200, sweep))
            await conn.close()
        for size in (1, 8, 32):
            await indexes(tool, True)
            await reset(tool)
            conn, pid = await session("force_generic_plan")
            holds = Holds(f"b{size}r{rnd}")

            async def batch(conn=conn, holds=holds, size=size) -> None:  # type: ignore[no-untyped-def]
                records = await ledger.record_holds(conn, [holds.next() for _ in range(size)],
                                                    CAPS)
                assert all(r.token is not None for r in records), records

            calls = HOLDS // size
            note(f"hold, bc_record_holds batch of {size}, generic (per hold)",
                 await measure(conn, pid, calls, batch) / size)
            await conn.close()
    for name, values in rounds.items():
        print(f"{name:62s} " + " ".join(f"{v:.3f}" for v in values) + " ms")
    await indexes(tool, True)
    await explain(tool)


async def explain(tool: asyncpg.Connection) -> None:
    query = ("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY OFF) "
             "SELECT count(*) FROM booking b JOIN booking_seat bs ON bs.booking_id = b.id "
             "WHERE b.user_id = 'b32r2u2' AND b.show_id = 3 AND b.status = 'INITIATED' "
             "AND (b.expires_at > now()) IS TRUE")
    await tool.execute("ANALYZE booking")  # as autovacuum does as holds come and go
    tr = tool.transaction()
    await tr.start()
    await tool.execute("DROP INDEX booking_live_by_user")
    print("cap query without the live-holds indexes:")
    print("\n".join(r[0] for r in await tool.fetch(query)))
    await tr.rollback()
    print("cap query with booking_live_by_user:")
    print("\n".join(r[0] for r in await tool.fetch(query)))

if __name__ == "__main__":
    t0 = time.time()
    asyncio.run(main())
    print(f"({time.time() - t0:.0f} s)")
