"""Hold records of one event-loop turn to one region, sent to PostgreSQL together.

Most of a primary's CPU per hold is per statement and per commit (planning, executor
start-up, the commit), not per row. `HoldBatcher.record` queues a hold's record; the
holds queued in one loop turn to a region go in ONE call and ONE commit
(`ledger.record_holds`, `bc_record_holds`), each with its own outcome. A batch of one,
the normal case at low load, is today's single statement (`ledger.record_item`).

- At most `MAX_IN_FLIGHT` batches per region are on their way at once; what is queued
  meanwhile waits for one to end and goes in the next (so batches grow with load), at
  most `MAX_ITEMS` to a call.
- Deadlines: an item whose deadline passed before its batch is sent is refused as a
  single hold would be (`RegionUnavailable`, nothing sent). The batch runs under the
  earliest deadline of the items it sends: the items of one loop turn arrived together
  and have nearly the same budget, so one deadline for all is simple and costs little.
- A failure of the call (connection lost, timeout) may have committed: every item's
  caller gets `RegionUnavailable(...).unknown()` (the hold path's `_undo_hold`). A
  transaction the server rolled back (`TransactionAborted`) and any other error reach
  every item's caller as they are. A batch of one fails exactly as the single statement.
- A caller that is cancelled while its batch is on its way: if its hold was recorded
  anyway, it is noted abandoned, so the sweeper expires it instead of leaving the seats
  held in PostgreSQL until the hold's TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from bookcluster.booking import ledger
from bookcluster.seats.home import HomeRegion
from bookcluster.stores import deadline
from bookcluster.topology.errors import RegionUnavailable

log = logging.getLogger(__name__)

MAX_ITEMS = 64  # holds per call: bounds the statement and how long its locks are held
MAX_IN_FLIGHT = 4  # calls per region on their way at once, of one process


@dataclass
class _Queued:
    item: ledger.HoldItem
    limit: deadline.Deadline
    future: asyncio.Future[ledger.HoldRecord] = field(repr=False)


def earliest(limits: list[deadline.Deadline]) -> deadline.Deadline:
    """The deadline a batch runs under: its items' earliest."""
    return min(limits, key=lambda d: d.at)


class _Waiting(Protocol):
    @property
    def future(self) -> asyncio.Future[Any]: ...


Q = TypeVar("Q", bound=_Waiting)


def take(queue: list[Q], at_most: int) -> tuple[list[Q], list[Q]]:
    """The next batch (callers still waiting, in arrival order, at most `at_most`) and
    what stays queued."""
    waiting = [q for q in queue if not q.future.done()]
    return waiting[:at_most], waiting[at_most:]


class HoldBatcher:
    """Coalesces the hold records of one region (one per region and process)."""

    def __init__(self, home: HomeRegion, region: str, caps: ledger.HoldCaps, *,
                 max_items: int = MAX_ITEMS, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.home = home
        self.region = region
        self.caps = caps
        self.max_items = max_items
        self.max_in_flight = max_in_flight
        self.batches_total = 0
        self.items_total = 0
        self._queue: list[_Queued] = []
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False

    async def record(self, item: ledger.HoldItem) -> ledger.HoldRecord:
        """Record one hold (with its neighbours of this loop turn); its caller's deadline
        (`deadline.current()`) bounds it."""
        if self._closed:
            raise RegionUnavailable(self.region, "postgres primary: node shutting down")
        loop = asyncio.get_running_loop()
        queued = _Queued(item, deadline.current(), loop.create_future())
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
            log.error("hold batch failed", exc_info=task.exception())
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
        items = [q.item for q in live]
        try:
            with deadline.running(earliest([q.limit for q in live])):
                async with self.home.connection(self.region, writes=True) as conn:
                    if len(items) == 1:
                        records = [await ledger.record_item(conn, items[0], self.caps)]
                    else:
                        records = await ledger.record_holds(conn, items, self.caps)
        except asyncio.CancelledError:  # closing: the call may have committed
            gone = RegionUnavailable(self.region, "postgres primary: node shutting down")
            self._fail(live, gone.unknown())
            raise
        except Exception as exc:  # noqa: BLE001 - each caller gets the batch's error
            self._fail(live, exc)
            return
        for queued, record in zip(live, records, strict=True):
            if not queued.future.done():
                queued.future.set_result(record)
            elif record.token is not None:  # recorded for a caller that is gone
                await self._abandon(queued.item.booking)

    def _fail(self, live: list[_Queued], exc: BaseException) -> None:
        for queued in live:
            if not queued.future.done():
                queued.future.set_exception(exc)

    async def _abandon(self, booking_id: str) -> None:
        with deadline.running(None), contextlib.suppress(RegionUnavailable):
            await self.home.abandon(self.region, booking_id)

    async def close(self) -> None:
        """Refuse new holds, let the batches on their way end (their own deadlines bound
        them), refuse what is still queued. Idempotent."""
        self._closed = True
        queued, self._queue = self._queue, []
        for q in queued:
            if not q.future.done():
                q.future.set_exception(
                    RegionUnavailable(self.region, "postgres primary: node shutting down"))
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def terminate(self) -> None:
        """Hard stop: cancel the batches on their way (their callers learn 'unknown')."""
        self._closed = True
        for task in self._running:
            task.cancel()
