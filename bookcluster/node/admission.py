"""Admission of writes on a home node: a bounded number run, a bounded number wait.

A burst (1,000 clients at once on one seat, an on-sale) must turn into a short
wait, not into errors. Without a bound every request starts at once: each
takes a Redis and a PostgreSQL connection, the pools fill, and the request
that would win waits behind hundreds of others' rate-limit calls until the
write deadline turns them all into 503s. Here at most `IN_FLIGHT` writes run
on a node (enough to keep its Redis and PostgreSQL pools busy: more only
queues inside them); the others wait.

Fair shares, decided before a write takes a place:
- one user has at most `per_user` writes running or waiting on a node; the next
  is refused at once, 429 `rate_limited` (`user_writes_at_once`), so a script
  with one token and thousands of connections fills its own share only (and the
  node's memory of the home master's refusals, `limits.py`, refuses a user or
  address over its rate before it queues at all);
- waiting writes queue per client address and the addresses take turns (round
  robin): many users behind one address wait behind each other, not in front of
  everyone else;
- when `QUEUED` writes already wait, a write of an address with fewer waiting
  pushes out the newest waiter of the address with the most; otherwise it is
  refused itself.
A write is refused, 503 `overloaded` with `Retry-After` (nothing was done, so any
retry is safe), when the queue is full (or it was pushed out of it) or when it
has waited until `MIN_WORK_S` before its deadline (it could no longer finish;
without this it would start and fail as a 503 of its region). Only writes
executed on this node are admitted here; a forward waits for its home node,
which admits it.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bookcluster.errors import Overloaded, RateLimited
from bookcluster.metrics import NodeMetrics
from bookcluster.stores import deadline

IN_FLIGHT = 64  # writes running at once on a node
QUEUED = 2048  # writes waiting on a node: about what it serves within one deadline
PER_USER = 16  # writes of one user running or waiting on a node (limits.user_writes_at_once)
MIN_WORK_S = 0.3  # a write admitted later than this before its deadline could not finish


class WriteAdmission:
    def __init__(self, metrics: NodeMetrics, in_flight: int = IN_FLIGHT,
                 queued: int = QUEUED, per_user: int = PER_USER) -> None:
        self._free = in_flight
        self._queued = queued
        self._per_user = per_user
        self._users: Counter[str] = Counter()  # writes running or waiting, per user
        # Waiters per address in arrival order; the dict's order is the addresses' turns.
        self._queues: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self._waiting = 0
        self._metrics = metrics
        metrics.writes_waiting.set_function(lambda: self._waiting)

    @asynccontextmanager
    async def admit(self, user: str = "", address: str = "") -> AsyncIterator[None]:
        """Run the block as one admitted write of `user` from `address`."""
        if self._users[user] >= self._per_user:
            self._metrics.limit_refusals.labels(self._metrics.region,
                                                "user_writes_at_once").inc()
            raise RateLimited("user_writes_at_once", 1)
        self._users[user] += 1
        try:
            if self._free > 0:
                self._free -= 1
            else:
                await self._wait(address)
            try:
                yield
            finally:
                self._release()
        finally:
            self._users[user] -= 1
            if not self._users[user]:
                del self._users[user]

    async def _wait(self, address: str) -> None:
        if self._waiting >= self._queued:
            self._push_out(address)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(address, deque()).append(waiter)
        self._waiting += 1
        try:
            async with asyncio.timeout(deadline.current().remaining() - MIN_WORK_S):
                await waiter
        except TimeoutError:
            self._leave(address, waiter)
            self._shed("deadline")
            raise Overloaded("waited for its turn until too close to its deadline") from None
        except BaseException:
            self._leave(address, waiter)
            raise

    def _leave(self, address: str, waiter: asyncio.Future[None]) -> None:
        """A waiter that gives up: out of its queue, or, if a slot was handed to it at
        the same moment, the slot goes on to the next."""
        if waiter.done() and not waiter.cancelled():
            if waiter.exception() is None:  # handed a slot: pass it on
                self._release()
            return  # handed or pushed out: already out of its queue
        waiter.cancel()
        queue = self._queues.get(address)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._queues[address]
            self._waiting -= 1

    def _push_out(self, address: str) -> None:
        """The queue is full: make room by the newest waiter of the address with the
        most waiting, if that is fairer than refusing this one."""
        own = len(self._queues.get(address, ()))
        victim = max(self._queues, key=lambda a: len(self._queues[a]), default=None)
        if victim is None or len(self._queues[victim]) <= own + 1:
            self._shed("queue_full")
            raise Overloaded(f"{self._waiting} writes already wait on this node")
        queue = self._queues[victim]
        queue.pop().set_exception(Overloaded(
            "pushed out of a full write queue by a write of a client with fewer waiting"))
        if not queue:
            del self._queues[victim]
        self._waiting -= 1
        self._shed("pushed_out")

    def _release(self) -> None:
        """Hand the slot to the first waiter of the address whose turn it is."""
        while self._queues:
            address, queue = next(iter(self._queues.items()))
            waiter = queue.popleft()
            if queue:
                self._queues.move_to_end(address)  # its next waiter after the others'
            else:
                del self._queues[address]
            self._waiting -= 1
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    def _shed(self, reason: str) -> None:
        self._metrics.writes_shed.labels(self._metrics.region, reason).inc()
