"""Versioned migrations: `migrations/NNNN_name.sql`, each applied once, in order."""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works; it only serialises concurrent migrators of one database.
MIGRATION_LOCK_ID = 7_245_001


def migration_files() -> list[tuple[int, str, Path]]:
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        number, _, name = path.stem.partition("_")
        found.append((int(number), name, path))
    return found


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply every migration not yet applied. Returns the versions it applied."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migration ("
        " version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_ID)
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migration")}
        for version, name, path in migration_files():
            if version in done:
                continue
            await conn.execute(path.read_text())
            await conn.execute(
                "INSERT INTO schema_migration (version, name) VALUES ($1, $2)", version, name
            )
            applied.append(version)
            log.info("applied migration %04d_%s", version, name)
    return applied
