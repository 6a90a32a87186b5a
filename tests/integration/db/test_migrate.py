"""Migrations and the repeatable function files on a real PostgreSQL.

A database made by the migrations as they were before functions moved to
`bookcluster/db/functions/` (frozen in `migrations_8011435/`: 0001-0013 with every
function in them) upgrades in place: the function files are applied and recorded,
a routine no file defines is dropped, the functions end up exactly those of a fresh
database, rows written through the old functions stay and the new ones work on them.
A function file is re-applied when its text changes, and only then.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest_asyncio

from bookcluster.booking import ledger
from bookcluster.db.migrate import (
    FUNCTIONS_DIR,
    checksum,
    function_files,
    migrate,
    migration_files,
)
from bookcluster.local.scratch_pg import scratch_primary
from bookcluster.stores.connections import PG_TOOL_SESSION, PG_USER, pg_dsn, pg_login

OLD_MIGRATIONS = Path(__file__).parent / "migrations_8011435"
SHOW = 7
SEATS = ["A1", "A2", "A3", "A4"]
PRICE = 20000

# (database name, create it first) -> a tool session of the application role in it
Connect = Callable[[str, bool], Awaitable[asyncpg.Connection]]


@pytest_asyncio.fixture(scope="module")
async def new_database() -> AsyncIterator[Connect]:
    """A plain PostgreSQL started by the launcher's own pieces; yields a function that
    connects to a database (first created, empty, owned by the application role)."""
    async with scratch_primary("bookcluster-migrate-") as (topology, region):
        conns: list[asyncpg.Connection] = []
        try:
            admin = await asyncpg.connect(pg_dsn(region.pg_primary, "postgres"),
                                          **pg_login(topology.secrets, admin=True))
            conns.append(admin)

            async def connect(name: str, create: bool = True) -> asyncpg.Connection:
                if create:
                    await admin.execute(f'CREATE DATABASE "{name}" OWNER "{PG_USER}"')
                conn = await asyncpg.connect(pg_dsn(region.pg_primary, name),
                                             **pg_login(topology.secrets),
                                             server_settings=PG_TOOL_SESSION)
                conns.append(conn)
                return conn

            yield connect
        finally:
            for conn in conns:
                await conn.close()


async def old_migrate(conn: asyncpg.Connection) -> None:
    """The previous commit's `migrate`: each versioned file once, in order."""
    await conn.execute("CREATE TABLE IF NOT EXISTS schema_migration ("
                       " version integer PRIMARY KEY, name text NOT NULL,"
                       " applied_at timestamptz NOT NULL DEFAULT now())")
    async with conn.transaction():
        for path in sorted(OLD_MIGRATIONS.glob("*.sql")):
            number, _, name = path.stem.partition("_")
            await conn.execute(path.read_text())
            await conn.execute("INSERT INTO schema_migration (version, name) VALUES ($1, $2)",
                               int(number), name)


async def seed(conn: asyncpg.Connection) -> None:
    """One owned theatre, one show of four seats."""
    await conn.execute("""
        INSERT INTO city VALUES ('c', 'City', 'State');
        INSERT INTO theatre VALUES ('t', 'c', 'Theatre', 'Road');
        INSERT INTO screen VALUES ('s', 't', 'Screen');
        INSERT INTO movie VALUES ('m', 'Movie', 'hi', 120, 'U');
        INSERT INTO theatre_owner (theatre_id, state, epoch) VALUES ('t', 'OWNED', 1)""")
    await conn.executemany("INSERT INTO seat VALUES ('s', $1, 'A', $2, 'std', $3)",
                           [(s, i + 1, PRICE) for i, s in enumerate(SEATS)])
    await conn.execute("INSERT INTO show VALUES ($1, 's', 'm', now() + interval '1 day')", SHOW)
    await conn.executemany("INSERT INTO show_seat (show_id, seat_id) VALUES ($1, $2)",
                           [(SHOW, s) for s in SEATS])


async def hold(conn: asyncpg.Connection, booking: str, seats: list[str]) -> asyncpg.Record:
    """The hold as the previous commit's holds.py called it (positional)."""
    row = await conn.fetchrow(
        "SELECT * FROM bc_record_hold($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, "
        "$13, $14)", SHOW, seats, booking, f"u-{booking}",
        datetime.now(UTC) + timedelta(minutes=10), timedelta(minutes=30),
        [PRICE] * len(seats), 10, 4, None, 1, "10.0.0.1", 10, 10)
    assert row is not None
    return row


async def confirm(conn: asyncpg.Connection, booking: str, seats: int) -> str:
    outcome: str = await conn.fetchval(
        "SELECT outcome FROM bc_confirm($1, $2, $3, $4, 'h', $5, $6, 'scratch', $7, 1)",
        SHOW, booking, f"u-{booking}", f"key-{booking}", f"pay-{booking}", PRICE * seats,
        datetime.now(UTC) + timedelta(minutes=1))
    return outcome


async def routines(conn: asyncpg.Connection) -> dict[str, str]:
    """Every routine of the schema with its whole definition."""
    rows = await conn.fetch(
        "SELECT p.oid::regprocedure::text AS sig, pg_get_functiondef(p.oid) AS def "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = current_schema()")
    return {r["sig"]: r["def"] for r in rows}


async def rows(conn: asyncpg.Connection) -> list[list[asyncpg.Record]]:
    return [await conn.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")
            for table in ("booking", "booking_seat", "show_seat", "payment", "idempotency",
                          "mirror_change")]


async def test_a_database_made_before_upgrades_in_place(new_database: Connect) -> None:
    old = await new_database("before", True)
    await old_migrate(old)
    await seed(old)
    held = await hold(old, f"b{SHOW}-held", ["A1", "A2"])
    sold = await hold(old, f"b{SHOW}-sold", ["A3"])
    assert held["token"] is not None and sold["token"] is not None
    assert await confirm(old, f"b{SHOW}-sold", 1) == "sold"
    # What an older database may still carry: a retired function, an older overload.
    await old.execute("CREATE FUNCTION bc_retired(p integer) RETURNS integer "
                      "LANGUAGE sql AS 'SELECT p'")
    await old.execute("CREATE FUNCTION bc_own(p_show bigint) RETURNS void "
                      "LANGUAGE sql AS 'SELECT bc_own(p_show, NULL)'")
    before = await rows(old)

    # Only the versioned migrations added since that commit are applied.
    old_versions = {int(p.stem.partition("_")[0]) for p in OLD_MIGRATIONS.glob("*.sql")}
    assert await migrate(old) == [v for v, _, _ in migration_files() if v not in old_versions]

    recorded = {r["file"]: r for r in await old.fetch("SELECT * FROM schema_function")}
    files = function_files()
    assert sorted(recorded) == [p.name for p in files]
    for path in files:
        assert recorded[path.name]["sha256"] == checksum(path.read_text())
        assert recorded[path.name]["functions"]
    upgraded = await routines(old)
    assert "bc_retired(integer)" not in upgraded and "bc_own(bigint)" not in upgraded
    assert set(upgraded) == {s for r in recorded.values() for s in r["functions"]}

    fresh = await new_database("after", True)
    assert await migrate(fresh) == [v for v, _, _ in migration_files()]
    assert await routines(fresh) == upgraded
    assert await fresh.fetchval("SELECT count(*) FROM pg_proc p JOIN pg_namespace n "
                                "ON n.oid = p.pronamespace WHERE n.nspname = 'public'") \
        == len(upgraded)

    assert await rows(old) == before
    assert await confirm(old, f"b{SHOW}-held", 2) == "sold"
    refused = await hold(old, f"b{SHOW}-late", ["A3", "A4"])
    assert refused["token"] is None and refused["refused"] == ["A3"]
    assert (await hold(old, f"b{SHOW}-new", ["A4"]))["token"] is not None
    statuses = dict(await old.fetch("SELECT seat_id, status FROM show_seat ORDER BY 1"))
    assert statuses == {"A1": "BOOKED", "A2": "BOOKED", "A3": "BOOKED", "A4": "LOCKED"}
    # The transitions that were Python before, now functions too, on the same rows.
    async with old.transaction():
        cancelled = await ledger.cancel(old, f"b{SHOW}-new", f"u-b{SHOW}-new")
    assert cancelled == ledger.Cancellation("INITIATED", [(f"b{SHOW}-new", SHOW, "A4")])
    async with old.transaction():
        assert await ledger.expire(old, [f"b{SHOW}-new", f"b{SHOW}-held"]) == []
    assert dict(await old.fetch("SELECT id, status FROM booking")) == {
        f"b{SHOW}-held": "CONFIRMED", f"b{SHOW}-sold": "CONFIRMED",
        f"b{SHOW}-new": "CANCELLED"}
    assert await old.fetchval("SELECT status FROM show_seat WHERE seat_id = 'A4'") \
        == "AVAILABLE"


async def test_a_function_file_is_reapplied_when_its_text_changes(
        new_database: Connect, tmp_path: Path) -> None:
    functions = tmp_path / "functions"
    shutil.copytree(FUNCTIONS_DIR, functions)
    conn = await new_database("edited", True)
    await migrate(conn, functions_dir=functions)

    async def applied() -> dict[str, datetime]:
        return dict(await conn.fetch("SELECT file, applied_at FROM schema_function"))

    first = await applied()
    await migrate(conn, functions_dir=functions)
    assert await applied() == first  # nothing changed, nothing re-applied

    # holds.sql loses its signature without the address; a new file adds a function.
    holds = functions / "holds.sql"
    text = holds.read_text()
    cut = text.index("-- The signature without the address")
    holds.write_text(text[:cut])
    (functions / "zz_extra.sql").write_text(
        "CREATE OR REPLACE FUNCTION bc_extra() RETURNS integer LANGUAGE sql AS 'SELECT 7';\n")
    await migrate(conn, functions_dir=functions)
    second = await applied()
    assert second["holds.sql"] > first["holds.sql"]
    assert {f: second[f] for f in first if f != "holds.sql"} == \
        {f: t for f, t in first.items() if f != "holds.sql"}
    present = await routines(conn)
    assert [s for s in present if s.startswith("bc_record_hold(")] == [
        "bc_record_hold(bigint,text[],text,text,timestamp with time zone,interval,integer[],"
        "integer,integer,text,integer,text,integer,integer)"]
    assert await conn.fetchval("SELECT bc_extra()") == 7

    (functions / "zz_extra.sql").unlink()
    await migrate(conn, functions_dir=functions)
    assert "bc_extra()" not in await routines(conn)
    assert "zz_extra.sql" not in await applied()


async def test_concurrent_migrators_apply_once(new_database: Connect) -> None:
    conns = [await new_database("race", True), await new_database("race", False)]
    results = await asyncio.gather(*(migrate(c) for c in conns))
    assert sorted(results) == [[], [v for v, _, _ in migration_files()]]
    assert await conns[0].fetchval("SELECT count(*) FROM schema_function") \
        == len(function_files())
