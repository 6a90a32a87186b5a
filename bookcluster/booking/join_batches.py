"""The joins of one on-sale arriving at one node together, sent to PostgreSQL together.

A join is one row under the on-sale's row lock: per join, the statement, its commit
and the wait for the lock cost the home primary far more than the row. `JoinBatcher.
join` queues a user's join; the joins queued in one loop turn go in ONE call and ONE
commit (`bc_onsale_join_many`), each with its own answer (its sequence number: users
new to the queue numbered in the order they arrived here, so the order is still
recorded; a user who joined before keeps their number). A batch of one is the single
statement (`bc_onsale_join`). The queueing, deadlines and failures are the shared
`batcher.Batcher`'s (as for `batches.HoldBatcher`):

- at most `MAX_IN_FLIGHT` calls per on-sale on their way at once (they queue on the
  row lock anyway); what arrives meanwhile goes in the next call, at most `MAX_ITEMS`;
- a failed call may have committed: every caller gets `RegionUnavailable(...).unknown()`
  (a join is idempotent: joining again returns the same number).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from bookcluster.booking.batcher import Batcher
from bookcluster.seats.home import HomeRegion

MAX_ITEMS = 256  # joins per call: one row each, cheap; bounds the row lock's hold
MAX_IN_FLIGHT = 2  # calls per on-sale of one process on their way (one runs, one waits)


@dataclass(frozen=True)
class Joined:
    """One join's answer: `state` is 'joined' | 'again' | 'not_open' | 'not_found'."""

    seq: int | None
    state: str


async def join_many(conn: asyncpg.Connection, onsale: str, users: list[str]) -> list[Joined]:
    """Joins `users` (in this order) in one statement; one answer per user, in order."""
    if len(users) == 1:
        row = await conn.fetchrow("SELECT * FROM bc_onsale_join($1, $2)", onsale, users[0])
        assert row is not None
        return [Joined(row["seq"], row["state"])]
    rows = await conn.fetch("SELECT * FROM bc_onsale_join_many($1, $2::text[])",
                            onsale, users)
    if [r["user_id"] for r in rows] != users:
        raise RuntimeError(f"bc_onsale_join_many answered {len(rows)} rows for "
                           f"{len(users)} users, or out of order")
    return [Joined(r["seq"], r["state"]) for r in rows]


class JoinBatcher(Batcher[str, Joined]):
    """Coalesces the joins of one on-sale at its home region (one per on-sale and
    process). A caller gone before its answer keeps its place: joins are idempotent."""

    what = "join batch"

    def __init__(self, home: HomeRegion, region: str, onsale: str, *,
                 max_items: int = MAX_ITEMS, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        super().__init__(region, max_items=max_items, max_in_flight=max_in_flight)
        self.home = home
        self.onsale = onsale

    async def join(self, user: str) -> Joined:
        """Join `user` (with the other joins of this loop turn); the caller's deadline
        (`deadline.current()`) bounds it."""
        return await self.submit(user)

    async def _call(self, items: list[str]) -> list[Joined]:
        async with self.home.connection(self.region, writes=True) as conn:
            return await join_many(conn, self.onsale, items)
