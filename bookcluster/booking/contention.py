"""Holds of one seat take turns on a node, and the losers are refused without a write.

When 1,000 clients want one seat, 999 are refused. Each refusal used to cost a
forward to the home region, a rate-limit call and a hold script on the home
master, all at once, until the last ones missed their deadline. Here every
node lets one hold of a seat at a time go on (forward, or the write itself);
the holds of that seat that arrive meanwhile wait for its answer, then ask the
home master whether their seats are still free, and are refused on the spot
if not. A node also refuses at once a hold its seat cache shows taken, after
asking the master the same way. Why a 409 from here is the master's answer:

- The answer comes from one read of the show's state on the home master (one
  MULTI of its four keys, `seatstate.read_seat_state`), atomic at one instant
  inside the request's lifetime: a request only uses a read sent after it
  arrived (after the hold it waited for, so that the read sees its outcome).
  If at that instant a requested seat was booked, blocked, or held until more
  than `CLOCK_MARGIN_MS` past the node's clock now, the hold script run at that
  instant would have refused, naming the same seats: the 409 is the answer the
  master would have given, with nothing changed, earlier. A hold ending within
  the margin (the node's clock may differ from the master's) leaves it
  undecided, and so does a read that fails: the hold then goes on normally.
- The seat cache (kept fresh by the master's publishes, possibly stale) is only
  a hint of whether to ask; it never refuses by itself.
- No grant ever comes from here: a hold that may succeed runs the script on the
  master and is recorded by PostgreSQL, which decides.
- Concurrent requests for one show share one master read: a burst costs a node
  one or two reads, not one per request. A show a node refused a hold of is
  cached there from then on (one read of the local replica, as for a seat map),
  so that its cache can hint.

The caller (`views.booking`) lets a hold with an Idempotency-Key, or with a body
the hold refuses as invalid, go on without a turn (a keyed retry may find its
own earlier hold on the seats; a reused key is 422 first). Asking the master
costs about what a seat-map read does, so it is counted against the
per-address read limit, not the write limits. Holds of different seats never
wait for each other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

from bookcluster.booking.limits import RateLimiter
from bookcluster.catalog import ShowInfo
from bookcluster.errors import SeatsUnavailable
from bookcluster.metrics import NodeMetrics
from bookcluster.seats.maps import SeatMaps
from bookcluster.seats.state import SeatState, now_ms, read_seat_state
from bookcluster.stores import deadline
from bookcluster.stores.connections import Connections
from bookcluster.stores.errors import REDIS_UNAVAILABLE
from bookcluster.topology.errors import RegionUnavailable

T = TypeVar("T")

CLOCK_MARGIN_MS = 1000  # how far a node's clock may be from its masters' (NTP: far less)


def taken(state: SeatState, seat_ids: list[str], now: int | None = None) -> list[str] | None:
    """The seats `state` shows not free at `now` (ms; default: this node's clock); None if
    a hold ends too close to now to say."""
    now = now_ms() if now is None else now
    out = []
    for seat in seat_ids:
        hold = state.holds.get(seat)
        if seat in state.blocked or seat in state.booked:
            out.append(seat)
        elif hold is not None and hold[1] > now - CLOCK_MARGIN_MS:
            if hold[1] <= now + CLOCK_MARGIN_MS:
                return None
            out.append(seat)
    return out


class SeatTurns:
    """Which hold of a show's seat is going on on this node: one per seat at a time."""

    def __init__(self) -> None:
        # show -> seat -> done when the hold going on for that seat on this node answers
        self._turns: dict[int, dict[str, asyncio.Future[None]]] = {}

    def going_on(self, show_id: int, seat_ids: list[str]) -> set[asyncio.Future[None]]:
        """The holds going on for any of `seat_ids` (empty: the seats are free to take)."""
        turns = self._turns.get(show_id, {})
        return {turns[seat] for seat in seat_ids if seat in turns}

    def take(self, show_id: int, seat_ids: list[str]) -> asyncio.Future[None]:
        """Mark `seat_ids` as held here until `done`; the caller checked `going_on` first."""
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        turns = self._turns.setdefault(show_id, {})
        for seat in seat_ids:
            turns[seat] = mine
        return mine

    def done(self, show_id: int, seat_ids: list[str], mine: asyncio.Future[None]) -> None:
        """End the turn `take` gave: the holds waiting for it go on."""
        turns = self._turns[show_id]
        for seat in seat_ids:
            del turns[seat]
        if not turns:
            del self._turns[show_id]
        mine.set_result(None)

    def __len__(self) -> int:
        """Shows with a hold going on."""
        return len(self._turns)


class SharedReads(Generic[T]):
    """One read per key at a time, shared by every caller that may use it.

    A caller passes `after`, the value of `started` when it arrived (or when the hold
    it waited for answered): it uses only a read started after that, so that the read
    sees what happened before. A read that returns None (failed) answers None to those
    sharing it."""

    def __init__(self) -> None:
        self.started = 0  # reads started so far: orders reads against arrivals
        self._running: dict[int, tuple[int, asyncio.Future[T]]] = {}  # key -> running

    async def get(self, key: int, after: int,
                  read: Callable[[], Awaitable[T | None]]) -> T | None:
        """The value of a read of `key` started after `after`: a running one, or `read()`."""
        while True:
            running = self._running.get(key)
            if running is None:
                return await self._read(key, read)
            number, future = running
            await asyncio.wait([future])
            if number > after:  # started late enough: share it
                return None if future.cancelled() else future.result()
            # It started too early (it may predate a release, or miss a hold): the next one.

    async def _read(self, key: int, read: Callable[[], Awaitable[T | None]]) -> T | None:
        self.started += 1
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._running[key] = (self.started, future)
        try:
            value = await read()
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._running[key]
        if value is None:
            future.cancel()  # those sharing it go on without it, as we do
        else:
            future.set_result(value)
        return value


class EarlyRefusal:
    def __init__(self, connections: Connections, seatmaps: SeatMaps, limiter: RateLimiter,
                 metrics: NodeMetrics) -> None:
        self._connections = connections
        self._seatmaps = seatmaps
        self._limiter = limiter
        self._metrics = metrics
        self._turns = SeatTurns()
        self._reads: SharedReads[SeatState] = SharedReads()  # master reads, per show

    @contextlib.asynccontextmanager
    async def turn(self, show: ShowInfo, seat_ids: list[str],
                   address: str) -> AsyncIterator[None]:
        """Run the block as this node's only hold going on for any of `seat_ids`;
        SeatsUnavailable instead if the home master shows some of them taken."""
        entry = self._seatmaps.cache.peek(show.id)
        if entry is not None and taken(entry.state, seat_ids):
            await self._refuse_if_taken(show, seat_ids, address, self._reads.started)
        while busy := self._turns.going_on(show.id, seat_ids):
            try:
                async with asyncio.timeout(deadline.current().left_for(show.region,
                                                                       "hold turn")):
                    await asyncio.wait(busy)
            except TimeoutError:
                raise RegionUnavailable(show.region, "a hold of the same seats on this "
                                                     "node did not finish in time") from None
            await self._refuse_if_taken(show, seat_ids, address, self._reads.started)
        mine = self._turns.take(show.id, seat_ids)
        try:
            yield
        finally:
            self._turns.done(show.id, seat_ids, mine)

    async def _refuse_if_taken(self, show: ShowInfo, seat_ids: list[str], address: str,
                               after: int) -> None:
        """SeatsUnavailable if a master read started after `after` shows some of
        `seat_ids` taken; returns if they are free or it cannot tell."""
        self._limiter.check_read(address)
        try:
            async with asyncio.timeout(deadline.current().left_for(show.region, "redis master")):
                state = await self._master_state(show, after)
        except (TimeoutError, RegionUnavailable):
            return  # the hold goes on, within the same deadline
        refused = taken(state, seat_ids) if state is not None else None
        if refused:
            self._metrics.holds.labels(self._metrics.region, show.region, "refused_early").inc()
            await self._cache(show)
            raise SeatsUnavailable(refused)

    async def _cache(self, show: ShowInfo) -> None:
        """Hold the show in this node's seat cache; nothing fails for it."""
        if self._seatmaps.cache.peek(show.id) is not None:
            return
        with contextlib.suppress(TimeoutError, RegionUnavailable):
            async with asyncio.timeout(deadline.current().left_for(show.region, "seat cache")):
                await self._seatmaps.entry(show)

    async def _master_state(self, show: ShowInfo, after: int) -> SeatState | None:
        """The show's state from a master read started after `after`; None if it failed."""
        return await self._reads.get(show.id, after, lambda: self._read(show))

    async def _read(self, show: ShowInfo) -> SeatState | None:
        self._metrics.early_refusal_reads.labels(self._metrics.region, show.region).inc()
        try:
            return await read_seat_state(self._connections.redis_master(show.region), show.id)
        except REDIS_UNAVAILABLE:
            return None  # those sharing it go on with their holds, as we do
