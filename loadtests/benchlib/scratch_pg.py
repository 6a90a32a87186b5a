"""A scratch PostgreSQL for the store-only cost tools (pg_hold_cost.py, pg_join_cost.py):
`bookcluster.local.scratch_pg`'s primary, migrated; and a process's CPU."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from bookcluster.db.migrate import migrate
from bookcluster.local.scratch_pg import scratch_primary
from bookcluster.stores.connections import PG_TOOL_SESSION, pg_dsn, pg_login
from bookcluster.topology.model import Region, Topology

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """A process's CPU so far (utime + stime from /proc), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


@asynccontextmanager
async def scratch_postgres(prefix: str) -> AsyncIterator[tuple[Topology, Region]]:
    """A migrated scratch primary: its one-region topology and region."""
    async with scratch_primary(prefix) as (topology, region):
        tool = await asyncpg.connect(pg_dsn(region.pg_primary), **pg_login(topology.secrets),
                                     server_settings=PG_TOOL_SESSION)
        try:
            await migrate(tool)
        finally:
            await tool.close()
        yield topology, region
