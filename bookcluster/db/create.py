"""The application's role and database on a region's primary, created once.

The role is no superuser; its session limits are set on the role so they bind every
session whatever its client sets up (see `stores/connections.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

from bookcluster.stores.connections import (
    PG_DATABASE,
    PG_ROLE_SETTINGS,
    PG_USER,
    connect_primary,
)
from bookcluster.topology.model import Endpoint
from bookcluster.topology.secrets import Secrets


async def create_database(members: Sequence[Endpoint], secrets: Secrets) -> None:
    """The application role (no superuser) and its database, which it owns, on
    whichever of `members` is the primary."""
    conn = await connect_primary(members, secrets, admin=True, database="postgres")
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", PG_USER):
            await conn.execute(f'CREATE ROLE "{PG_USER}" LOGIN NOSUPERUSER NOCREATEDB '
                               "NOCREATEROLE NOREPLICATION")
        # ALTER ROLE takes no bind parameters; the password is quoted as a literal.
        password = await conn.fetchval("SELECT quote_literal($1)", secrets.pg_password)
        await conn.execute(f'ALTER ROLE "{PG_USER}" PASSWORD {password}')
        # On the role, so they bind every session of it, whatever its client sets up
        # (see PG_SESSION_LIMITS, PG_PLANS); tools lift them per session
        # (PG_TOOL_SESSION). Set on every start: an existing role gets new ones too.
        for name, value in PG_ROLE_SETTINGS.items():
            await conn.execute(f"""ALTER ROLE "{PG_USER}" SET {name} = '{value}'""")
        # The standbys' flush positions (pg_stat_replication), NULL to it otherwise:
        # a confirm answers 200 only once its sale is replicated (stores/replication.py).
        await conn.execute(f'GRANT pg_read_all_stats TO "{PG_USER}"')
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", PG_DATABASE):
            await conn.execute(f'CREATE DATABASE "{PG_DATABASE}" OWNER "{PG_USER}"')
    finally:
        await conn.close()
