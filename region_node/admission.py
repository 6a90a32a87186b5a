"""Admission of writes on a home node: a bounded number run, a bounded number wait.

A burst (1,000 clients at once on one seat, an on-sale) must turn into a short
wait, not into errors. Without a bound every request starts at once: each
takes a Redis and a PostgreSQL connection, the pools fill, and the request
that would win waits behind hundreds of others' rate-limit calls until the
write deadline turns them all into 503s. Here at most `IN_FLIGHT` writes run
on a node (enough to keep its Redis and PostgreSQL pools busy: more only
queues inside them); the others wait in arrival order. A write is refused,
503 `overloaded` with `Retry-After` (nothing was done, so any retry is safe), only
- when `QUEUED` writes already wait (the queue itself overflows: they would
  not all be served within the deadline anyway), or
- when it has waited until `MIN_WORK_S` before its deadline (it could no
  longer finish; without this it would start and fail as a 503 of its region).
Only writes executed on this node are admitted here; a forward waits for its
home node, which admits it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from region_node import deadline
from region_node.errors import Overloaded
from region_node.metrics import NodeMetrics

IN_FLIGHT = 64  # writes running at once on a node
QUEUED = 2048  # writes waiting on a node: about what it serves within one deadline
MIN_WORK_S = 0.3  # a write admitted later than this before its deadline could not finish


class WriteAdmission:
    def __init__(self, metrics: NodeMetrics, in_flight: int = IN_FLIGHT,
                 queued: int = QUEUED) -> None:
        self._slots = asyncio.Semaphore(in_flight)  # FIFO: waiters are woken in order
        self._queued = queued
        self._waiting = 0
        self._metrics = metrics
        metrics.writes_waiting.set_function(lambda: self._waiting)

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Run the block as one admitted write."""
        if self._slots.locked():
            await self._wait()
        else:
            await self._slots.acquire()  # free now: returns at once
        try:
            yield
        finally:
            self._slots.release()

    async def _wait(self) -> None:
        if self._waiting >= self._queued:
            self._shed("queue_full")
            raise Overloaded(f"{self._waiting} writes already wait on this node")
        self._waiting += 1
        try:
            async with asyncio.timeout(deadline.current().remaining() - MIN_WORK_S):
                await self._slots.acquire()
        except TimeoutError:
            self._shed("deadline")
            raise Overloaded("waited for its turn until too close to its deadline") from None
        finally:
            self._waiting -= 1

    def _shed(self, reason: str) -> None:
        self._metrics.writes_shed.labels(self._metrics.region, reason).inc()
