"""The joins of one on-sale arriving at one node together, sent to PostgreSQL together.

A join is one row under the on-sale's row lock: per join, the statement, its commit
and the wait for the lock cost the home primary far more than the row. `JoinBatcher.
join` queues a user's join; the joins queued in one loop turn go in ONE call and ONE
commit (`bc_onsale_join_many`), each with its own answer (its sequence number: users
new to the queue numbered in the order they arrived here, so the order is still
recorded; a user who joined before keeps their number). A batch of one is the single
statement (`bc_onsale_join`). Like `batches.HoldBatcher`:

- at most `MAX_IN_FLIGHT` calls per on-sale on their way at once (they queue on the
  row lock anyway); what arrives meanwhile goes in the next call, at most `MAX_ITEMS`;
- an item whose deadline passed before its call is refused (`RegionUnavailable`,
  nothing sent); a call runs under its items' earliest deadline;
- a failed call may have committed: every caller gets `RegionUnavailable(...).unknown()`
  (a join is idempotent: joining again returns the same number).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import asyncpg

from bookcluster.booking.batches import earliest, take
from bookcluster.seats.home import HomeRegion
from bookcluster.stores import deadline
from bookcluster.topology.errors import RegionUnavailable

log = logging.getLogger(__name__)

MAX_ITEMS = 256  # joins per call: one row each, cheap; bounds the row lock's hold
MAX_IN_FLIGHT = 2  # calls per on-sale of one process on their way (one runs, one waits)


@dataclass(frozen=True)
class Joined:
    """One join's answer: `state` is 'joined' | 'again' | 'not_open' | 'not_found'."""

    seq: int | None
    state: str


@dataclass
class _Queued:
    user: str
    limit: deadline.Deadline
    future: asyncio.Future[Joined] = field(repr=False)


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


class JoinBatcher:
    """Coalesces the joins of one on-sale at its home region (one per on-sale and
    process)."""

    def __init__(self, home: HomeRegion, region: str, onsale: str, *,
                 max_items: int = MAX_ITEMS, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.home = home
        self.region = region
        self.onsale = onsale
        self.max_items = max_items
        self.max_in_flight = max_in_flight
        self.batches_total = 0
        self.items_total = 0
        self._queue: list[_Queued] = []
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False

    async def join(self, user: str) -> Joined:
        """Join `user` (with the other joins of this loop turn); the caller's deadline
        (`deadline.current()`) bounds it."""
        if self._closed:
            raise RegionUnavailable(self.region, "postgres primary: node shutting down")
        loop = asyncio.get_running_loop()
        queued = _Queued(user, deadline.current(), loop.create_future())
        self._queue.append(queued)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)  # after the other callers of this loop turn
        return await queued.future

    def _flush(self) -> None:
        self._scheduled = False
        while self._queue and len(self._running) < self.max_in_flight and not self._closed:
            batch, self._queue = take(self._queue, self.max_items)
            if not batch:
                return
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._running.add(task)
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:  # a bug in _send
            log.error("join batch failed", exc_info=task.exception())
        if self._queue and not self._scheduled and not self._closed:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _send(self, batch: list[_Queued]) -> None:
        live = []
        for queued in batch:
            if queued.future.done():  # its caller gave up: nothing was sent for it
                continue
            try:
                queued.limit.left_for(self.region, "postgres primary")
            except RegionUnavailable as exc:
                queued.future.set_exception(exc)
                continue
            live.append(queued)
        if not live:
            return
        self.batches_total += 1
        self.items_total += len(live)
        try:
            with deadline.running(earliest([q.limit for q in live])):
                async with self.home.connection(self.region, writes=True) as conn:
                    answers = await join_many(conn, self.onsale, [q.user for q in live])
        except asyncio.CancelledError:  # closing: the call may have committed
            gone = RegionUnavailable(self.region, "postgres primary: node shutting down")
            self._fail(live, gone.unknown())
            raise
        except Exception as exc:  # noqa: BLE001 - each caller gets the batch's error
            self._fail(live, exc)
            return
        for queued, joined in zip(live, answers, strict=True):
            if not queued.future.done():  # a caller gone keeps its place: joins are idempotent
                queued.future.set_result(joined)

    def _fail(self, live: list[_Queued], exc: BaseException) -> None:
        for queued in live:
            if not queued.future.done():
                queued.future.set_exception(exc)

    async def close(self) -> None:
        """Refuse new joins, let the calls on their way end, refuse what is queued.
        Idempotent."""
        self._closed = True
        queued, self._queue = self._queue, []
        for q in queued:
            if not q.future.done():
                q.future.set_exception(
                    RegionUnavailable(self.region, "postgres primary: node shutting down"))
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
