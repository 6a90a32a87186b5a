"""An operator tool's session on a region's PostgreSQL primary (commands, moves).

Not the process's pools (`connections.py`): one session, no statement limits, opened
on whichever member leads now and closed by its caller.
"""

from __future__ import annotations

import asyncpg

from bookcluster.stores.connections import PG_TOOL_SESSION, connect_primary
from bookcluster.topology.model import Topology

# A member that accepts connections and never answers (paused, a cut link) is given
# this long, not asyncpg's 60 s: a tool waiting on it would hold up everything after.
CONNECT_TIMEOUT_S = 5.0


async def connect(topology: Topology, region: str) -> asyncpg.Connection:
    """An operator tool's session on a region's primary (no statement limits), whichever
    of its members that is now."""
    return await connect_primary(topology.region(region).pg_members, topology.secrets,
                                 server_settings=PG_TOOL_SESSION, timeout=CONNECT_TIMEOUT_S)
