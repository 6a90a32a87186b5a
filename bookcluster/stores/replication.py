"""Has a synchronous standby flushed a commit? Behind "a 200 means replicated".

A commit waits for the synchronous standby (`synchronous_commit = on`), but the
wait can end without it, and then the commit is visible to every session all
the same: a cancelled wait (the node's deadline cancels the statement, or an
operator's `pg_cancel_backend`) leaves it "committed locally, but might not
have been replicated"; and Patroni's non-strict `synchronous_mode` empties
`synchronous_standby_names` once the standby stops streaming, so commits return
at once. A failover may then promote a standby without it. So whatever tells a
client that something happened (a confirm's 200, first or replayed, a theatre
move's next step) first asks the primary here whether a synchronous standby
has flushed the WAL up to a position at or past that commit.

The position (`lsn`): default `pg_current_wal_lsn()` on the primary, read after
the commit: at or past its commit record (conservative: other sessions' WAL may
lie in between, which the standby flushes a moment later). A standby counts if
`pg_stat_replication` lists it `sync` (or `quorum`: one is enough for Patroni's
quorum mode with `ANY 1`, not for more); Patroni promotes only such a member.
Its lsn columns are NULL to a role without `pg_read_all_stats`, which the
launcher grants the application role (`bookcluster.local.postgres_server`); without it
`StandbyInvisible` is raised rather than a silent "not flushed" forever.

Run these on a connection to the primary, outside a transaction that wrote.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg

POLL_FIRST_S = 0.002
POLL_MAX_S = 0.05

PROBE = """
SELECT t.target::text AS target,
       count(r.pid) AS sync_standbys,
       coalesce(bool_or(r.flush_lsn >= t.target), false) AS flushed,
       pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS can_see
FROM (SELECT coalesce($1::text::pg_lsn, pg_current_wal_lsn()) AS target) t
LEFT JOIN pg_stat_replication r ON r.sync_state IN ('sync', 'quorum')
GROUP BY t.target
"""


class StandbyInvisible(RuntimeError):
    """This role cannot read the standbys' positions (it lacks pg_read_all_stats)."""


@dataclass(frozen=True)
class Flush:
    target: str  # the WAL position asked about, e.g. '0/3000148'
    flushed: bool  # a synchronous standby flushed up to it
    sync_standbys: int  # synchronous standbys streaming now


async def probe(conn: asyncpg.Connection, lsn: str | None = None) -> Flush:
    """One look at the synchronous standbys' flush positions against `lsn` (default:
    the primary's current WAL write position)."""
    row = await conn.fetchrow(PROBE, lsn)
    if not row["can_see"]:
        raise StandbyInvisible(
            "this role cannot read pg_stat_replication's positions: "
            "GRANT pg_read_all_stats to it (the launcher does)")
    return Flush(row["target"], row["flushed"], row["sync_standbys"])


async def standby_flushed(conn: asyncpg.Connection, lsn: str | None = None) -> bool:
    """Whether a synchronous standby has flushed the WAL up to `lsn` (default: all the
    primary has written so far, so every commit this session saw end)."""
    return (await probe(conn, lsn)).flushed


async def wait_standby_flushed(conn: asyncpg.Connection, timeout_s: float,
                               lsn: str | None = None, *,
                               without_standby_give_up: bool = False) -> bool:
    """Poll until a synchronous standby has flushed up to `lsn` (default: the primary's
    WAL write position at the first look) or `timeout_s` passed; True if it has.
    `without_standby_give_up`: answer False at once while no synchronous standby
    streams at all (a non-strict primary running alone) instead of waiting for one."""
    ends = time.monotonic() + timeout_s
    pause = POLL_FIRST_S
    while True:
        state = await probe(conn, lsn)
        if state.flushed:
            return True
        if without_standby_give_up and state.sync_standbys == 0:
            return False
        lsn = state.target
        left = ends - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, POLL_MAX_S)
