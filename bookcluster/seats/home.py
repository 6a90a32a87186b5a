"""Access to a show's home region for writes, with CP failure semantics.

Every write to a home region's Redis master or PostgreSQL primary goes
through here, bounded by the write's deadline (`deadline.py`): a region that
does not answer in time becomes `RegionUnavailable` (HTTP 503) — never a
hang, never a guess: its `outcome` says whether the write may still land. A
transaction commits only before the deadline. A
transaction the primary aborts rather than let it wait on locks (deadlock
victim, `lock_timeout`, `statement_timeout`: see `bookcluster.stores.connections`) becomes
`TransactionAborted` (HTTP 503): it rolled back, so a retry is safe.
A write to a theatre this region may not write at the node's epoch
(`ownership.py`: `bc_own`) becomes `Moved` or `TheatreMoving`, having changed
nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from bookcluster import tracing
from bookcluster.errors import TransactionAborted
from bookcluster.seats import keys, layout
from bookcluster.seats.scripts import SeatScripts
from bookcluster.seats.state import SeatState, read_seats
from bookcluster.stores import deadline, ownership
from bookcluster.stores.connections import Connections
from bookcluster.stores.errors import (  # noqa: F401 (re-exported for the seat writers)
    ABORT_REASONS,
    PG_ABORTED,
    PG_UNAVAILABLE,
    REDIS_UNAVAILABLE,
)
from bookcluster.topology.errors import RegionUnavailable


class HomeRegion:
    """Runs seat scripts and transactions against the home region of a show."""

    def __init__(self, connections: Connections) -> None:
        self._connections = connections
        self._scripts = SeatScripts()

    @property
    def epoch(self) -> int:
        """The topology epoch this process routes by (it changes on a live apply)."""
        return self._connections.topology.epoch

    def replicated(self, region: str) -> bool:
        """Whether `region`'s PostgreSQL has a standby: then an acknowledged commit must be
        on it too (`replication.py`); a region without one promises only its primary."""
        return self._connections.topology.region(region).pg_standby is not None

    async def script(self, region: str, name: str, show_id: int, args: list[Any],
                     more_keys: list[str] | None = None) -> Any:
        """Run a seat script (KEYS: the show's, then `more_keys`); a failure once it
        was sent may still have applied it."""
        client = self._connections.redis_master(region)
        left = deadline.current().left_for(region, "redis master")
        try:
            with tracing.span(f"redis {name}", "client", {
                    "db.system": "redis", "bookcluster.home": region,
                    "bookcluster.show_id": show_id}):
                async with asyncio.timeout(left):
                    return await self._scripts.run(
                        client, name, keys.show_keys(show_id) + (more_keys or []),
                        [keys.SEAT_CHANGES_CHANNEL, show_id, *args])
        except REDIS_UNAVAILABLE as exc:
            raise RegionUnavailable(region, "redis master", outcome="unknown") from exc

    async def put_layout(self, region: str, show_id: int, fields: dict[str, str]) -> None:
        """Write a show's layout on its home master (`layout.py`)."""
        client = self._connections.redis_master(region)
        try:
            async with asyncio.timeout(deadline.current().left_for(region, "redis master")):
                await layout.write(client, [show_id], fields)
        except REDIS_UNAVAILABLE as exc:
            raise RegionUnavailable(region, "redis master") from exc

    async def seat_state(self, region: str, show_id: int, seats: list[str]) -> SeatState:
        """These seats of the show as its home master holds them now."""
        client = self._connections.redis_master(region)
        try:
            async with asyncio.timeout(deadline.current().left_for(region, "redis master")):
                return await read_seats(client, show_id, seats)
        except REDIS_UNAVAILABLE as exc:
            raise RegionUnavailable(region, "redis master") from exc

    async def abandon(self, region: str, booking_id: str) -> None:
        """Note a hold whose PostgreSQL outcome is unknown, for the sweeper to expire."""
        try:
            await self._connections.redis_master(region).zadd(
                keys.ABANDONED_HOLDS, {booking_id: time.time()})
        except REDIS_UNAVAILABLE as exc:
            raise RegionUnavailable(region, "redis master") from exc

    async def abandoned(self, region: str) -> dict[str, float]:
        client = self._connections.redis_master(region)
        try:
            pairs: list[Any] = await client.zrange(keys.ABANDONED_HOLDS, 0, -1,
                                                   withscores=True)
            return {str(member): float(score) for member, score in pairs}
        except REDIS_UNAVAILABLE as exc:
            raise RegionUnavailable(region, "redis master") from exc

    async def forget_abandoned(self, region: str, booking_ids: list[str]) -> None:
        if booking_ids:
            await self._connections.redis_master(region).zrem(keys.ABANDONED_HOLDS,
                                                               *booking_ids)

    @asynccontextmanager
    async def transaction(self, region: str) -> AsyncIterator[asyncpg.Connection]:
        """A transaction that commits before the deadline or not at all."""
        pool = self._connections.pg_primary(region)
        limit = deadline.current()
        committing = False
        try:
            async with asyncio.timeout(limit.left_for(region, "postgres primary")):
                async with pool.acquire() as conn, conn.transaction():
                    yield conn
                    limit.left_for(region, "postgres commit")  # raising here rolls back
                    committing = True
        except PG_UNAVAILABLE as exc:
            unavailable = RegionUnavailable(region, "postgres primary")
            raise (unavailable.unknown() if committing else unavailable) from exc
        except PG_ABORTED as exc:
            raise TransactionAborted(region, ABORT_REASONS[exc.sqlstate]) from exc
        except asyncpg.RaiseError as exc:
            refused = ownership.refusal(exc, region)
            if refused is None:
                raise
            raise refused from exc

    @asynccontextmanager
    async def write(self, region: str, show_id: int, *,
                    epoch: int | None = None) -> AsyncIterator[asyncpg.Connection]:
        """A transaction that first fences the show's theatre (`bc_own`): it goes on only
        if `region` owns it at our epoch (`epoch`, default: this process's), and a move
        cannot freeze it until the transaction ends."""
        async with self.transaction(region) as conn:
            await conn.execute("SELECT bc_own($1, $2)", show_id,
                               self.epoch if epoch is None else epoch)
            yield conn

    @asynccontextmanager
    async def connection(self, region: str, *,
                         writes: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """A connection for single statements (each its own transaction); with `writes`
        a failure says the statement may have committed."""
        pool = self._connections.pg_primary(region)
        try:
            async with asyncio.timeout(deadline.current().left_for(region, "postgres primary")):
                async with pool.acquire() as conn:
                    yield conn
        except PG_UNAVAILABLE as exc:
            unavailable = RegionUnavailable(region, "postgres primary")
            raise (unavailable.unknown() if writes else unavailable) from exc
        except PG_ABORTED as exc:
            raise TransactionAborted(region, ABORT_REASONS[exc.sqlstate]) from exc
        except asyncpg.RaiseError as exc:
            refused = ownership.refusal(exc, region)
            if refused is None:
                raise
            raise refused from exc
