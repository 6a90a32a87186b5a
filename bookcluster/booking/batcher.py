"""Calls of one event-loop turn to one region's primary, sent together: the shared base
of the hold batcher (`batches.py`) and the join batcher (`join_batches.py`).

Most of a primary's CPU per write is per statement and per commit, not per row. A caller
`submit`s an item; the items queued in one loop turn go in ONE call (`_call`, the
subclass's statement and commit), each with its own answer.

- At most `max_in_flight` calls are on their way at once; what is queued meanwhile
  waits for one to end and goes in the next (so batches grow with load), at most
  `max_items` to a call.
- Deadlines: an item whose deadline passed before its call is sent is refused as a
  single statement would be (`RegionUnavailable`, nothing sent). The call runs under
  the earliest deadline of its items: the items of one loop turn arrived together and
  have nearly the same budget, so one deadline for all is simple and costs little.
- A call cancelled while on its way (closing) may have committed: every caller gets
  `RegionUnavailable(...).unknown()`. Any error of the call (the store's own errors
  already say "unknown" where the answer was lost) reaches every caller as it is.
- A caller gone before its answer came: `_orphaned` decides what its answer means
  (the hold batcher abandons a hold recorded for nobody; a join simply stays).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from bookcluster.stores import deadline
from bookcluster.topology.errors import RegionUnavailable

log = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")  # its answer


@dataclass
class Queued(Generic[I, R]):
    item: I
    limit: deadline.Deadline
    future: asyncio.Future[R] = field(repr=False)


def earliest(limits: list[deadline.Deadline]) -> deadline.Deadline:
    """The deadline a batch runs under: its items' earliest."""
    return min(limits, key=lambda d: d.at)


class _Waiting(Protocol):
    @property
    def future(self) -> asyncio.Future[Any]: ...


W = TypeVar("W", bound=_Waiting)


def take(queue: list[W], at_most: int) -> tuple[list[W], list[W]]:
    """The next batch (callers still waiting, in arrival order, at most `at_most`) and
    what stays queued."""
    waiting = [q for q in queue if not q.future.done()]
    return waiting[:at_most], waiting[at_most:]


class Batcher(ABC, Generic[I, R]):
    """Coalesces the calls of one kind to one region's primary (one per process and
    whatever the subclass keys it by)."""

    what = "batch"  # named in the log when a call fails by a bug

    def __init__(self, region: str, *, max_items: int, max_in_flight: int) -> None:
        self.region = region
        self.max_items = max_items
        self.max_in_flight = max_in_flight
        self.batches_total = 0
        self.items_total = 0
        self._queue: list[Queued[I, R]] = []
        self._scheduled = False
        self._running: dict[asyncio.Task[None], list[Queued[I, R]]] = {}
        self._closed = False

    @abstractmethod
    async def _call(self, items: list[I]) -> list[R]:
        """One call and commit for `items` (at least one), one answer per item, in
        order; runs under the batch's deadline."""

    async def _orphaned(self, item: I, answer: R) -> None:  # noqa: B027 - optional hook
        """`item` was answered after its caller gave up."""

    def _gone(self) -> RegionUnavailable:
        return RegionUnavailable(self.region, "postgres primary: node shutting down")

    async def submit(self, item: I) -> R:
        """`item`'s answer (sent with the other items of this loop turn); the caller's
        deadline (`deadline.current()`) bounds it."""
        if self._closed:
            raise self._gone()
        loop = asyncio.get_running_loop()
        queued: Queued[I, R] = Queued(item, deadline.current(), loop.create_future())
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
            self._running[task] = batch
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        batch = self._running.pop(task, [])
        if not task.cancelled() and task.exception() is not None:  # a bug in _send
            log.error("%s failed", self.what, exc_info=task.exception())
        # A task cancelled before it ran, or a bug: no caller is left waiting forever.
        self._fail(batch, self._gone().unknown())
        if self._queue and not self._scheduled and not self._closed:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _send(self, batch: list[Queued[I, R]]) -> None:
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
                answers = await self._call([q.item for q in live])
            if len(answers) != len(live):
                raise RuntimeError(f"{self.what}: {len(answers)} answers for {len(live)}")
        except asyncio.CancelledError:  # closing: the call may have committed
            self._fail(live, self._gone().unknown())
            raise
        except Exception as exc:  # noqa: BLE001 - each caller gets the batch's error
            self._fail(live, exc)
            return
        for queued, answer in zip(live, answers, strict=True):
            if not queued.future.done():
                queued.future.set_result(answer)
            else:
                await self._orphaned(queued.item, answer)

    def _fail(self, live: list[Queued[I, R]], exc: BaseException) -> None:
        for queued in live:
            if not queued.future.done():
                queued.future.set_exception(exc)

    async def close(self) -> None:
        """Refuse new items, let the calls on their way end (their own deadlines bound
        them), refuse what is still queued. Idempotent."""
        self._closed = True
        queued, self._queue = self._queue, []
        for q in queued:
            if not q.future.done():
                q.future.set_exception(self._gone())
        if self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)

    def terminate(self) -> None:
        """Hard stop: cancel the calls on their way (their callers learn 'unknown')."""
        self._closed = True
        for task in list(self._running):
            task.cancel()
