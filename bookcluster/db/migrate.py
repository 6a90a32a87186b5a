"""The schema: versioned migrations, then the SQL functions.

`migrations/NNNN_name.sql` hold tables, indexes, grants and data changes; each is
applied once, in order (`schema_migration`). `functions/*.sql` hold the current
definition of every SQL function, one file per family, each `CREATE OR REPLACE`:
a file is re-applied whenever its text changes (`schema_function` keeps its sha256:
Flyway's repeatable migrations), after the versioned ones, in name order. A migration
therefore never calls a function of `functions/` (on a fresh database they do not
exist yet). A function no file defines any more (an older signature, a dropped one)
is dropped, so a database created long ago and one created today end up with the same
functions. To change a function's result type or a parameter's name, which
`CREATE OR REPLACE` refuses, its file first says `DROP FUNCTION IF EXISTS` for it.

Everything runs in one transaction under one advisory lock: concurrent migrators of a
database wait for each other, and a failure leaves the schema as it was.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
FUNCTIONS_DIR = Path(__file__).parent / "functions"
# Any constant works; it only serialises concurrent migrators of one database.
MIGRATION_LOCK_ID = 7_245_001

# This role's own routines in the schema it migrates, not an extension's: the ones
# the function files own. A routine's version changes whenever its row is written,
# as `CREATE OR REPLACE` does even when nothing changed.
_ROUTINES = """
SELECT p.oid::regprocedure::text AS signature,
       p.xmin::text || ':' || p.ctid::text AS version
FROM pg_proc p
WHERE p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
  AND p.proowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                  AND d.objid = p.oid AND d.deptype = 'e')
"""


class FunctionFileError(RuntimeError):
    """The function files are missing or two of them define the same function."""


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, str, Path]]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        number, _, name = path.stem.partition("_")
        found.append((int(number), name, path))
    return found


def function_files(directory: Path = FUNCTIONS_DIR) -> list[Path]:
    return sorted(directory.glob("*.sql"))


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def migrate(conn: asyncpg.Connection, *, migrations_dir: Path = MIGRATIONS_DIR,
                  functions_dir: Path = FUNCTIONS_DIR) -> list[int]:
    """Apply every migration not yet applied, then every function file whose text
    changed. Returns the migration versions it applied."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_ID)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migration ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migration")}
        for version, name, path in migration_files(migrations_dir):
            if version in done:
                continue
            text = path.read_text()
            if _has_statements(text):  # asyncpg cannot run a text of comments only
                await conn.execute(text)
            await conn.execute(
                "INSERT INTO schema_migration (version, name) VALUES ($1, $2)", version, name
            )
            applied.append(version)
            log.info("applied migration %04d_%s", version, name)
        await apply_functions(conn, functions_dir)
    return applied


async def apply_functions(conn: asyncpg.Connection,
                          functions_dir: Path = FUNCTIONS_DIR) -> list[str]:
    """In the caller's transaction (under the migration lock): re-apply each function
    file whose text changed, record what it defines, drop routines no file defines.
    Returns the names of the files applied."""
    files = function_files(functions_dir)
    if not files:  # a broken install must not drop every function of a live database
        raise FunctionFileError(f"no function files in {functions_dir}")
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_function ("
        " file text PRIMARY KEY, sha256 text NOT NULL,"
        " functions text[] NOT NULL,"  # the signatures it defines, as regprocedure
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    recorded = {r["file"]: (r["sha256"], set(r["functions"]))
                for r in await conn.fetch("SELECT file, sha256, functions FROM schema_function")}
    applied: list[str] = []
    for path in files:
        text = path.read_text()
        digest = checksum(text)
        if recorded.get(path.name, ("", set()))[0] == digest:
            continue
        before = await _routines(conn)
        await conn.execute(text)
        defined = {sig for sig, version in (await _routines(conn)).items()
                   if before.get(sig) != version}
        recorded[path.name] = (digest, defined)
        await conn.execute(
            "INSERT INTO schema_function (file, sha256, functions) VALUES ($1, $2, $3) "
            "ON CONFLICT (file) DO UPDATE SET sha256 = EXCLUDED.sha256, "
            "functions = EXCLUDED.functions, applied_at = now()",
            path.name, digest, sorted(defined))
        applied.append(path.name)
        log.info("applied functions %s (%s)", path.name, ", ".join(sorted(defined)))
    gone = set(recorded) - {p.name for p in files}
    if gone:
        await conn.execute("DELETE FROM schema_function WHERE file = ANY ($1::text[])",
                           sorted(gone))
    kept: dict[str, str] = {}
    for name, (_, functions) in sorted(recorded.items()):
        if name in gone:
            continue
        for signature in functions:
            if signature in kept:
                raise FunctionFileError(f"{kept[signature]} and {name} both define {signature}")
            kept[signature] = name
    for signature in sorted(set(await _routines(conn)) - set(kept)):
        # The signature is PostgreSQL's own rendering (regprocedure), quoted as needed.
        await conn.execute(f"DROP ROUTINE {signature}")
        log.info("dropped function %s: no function file defines it", signature)
    return applied


def _has_statements(sql: str) -> bool:
    return any(line.strip() and not line.lstrip().startswith("--")
               for line in sql.splitlines())


async def _routines(conn: asyncpg.Connection) -> dict[str, str]:
    return {r["signature"]: r["version"] for r in await conn.fetch(_ROUTINES)}
