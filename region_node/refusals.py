"""Early refusal of holds on seats the home master shows taken: a 409 without a write.

When 1,000 clients want one seat, 999 are refused. Each refusal used to cost a
forward to the home region, a rate-limit call and a hold script on the home
master, and those queued behind one another until the last ones missed their
deadline. Here a node answers them itself, and the answer is still the home
master's:

- Before a hold is forwarded or admitted, the node's seat cache (kept fresh by
  the master's publishes) is only a hint of whether to ask: a show the node
  does not cache, or seats it shows free, take the normal path at no extra
  cost. A hold that had to wait for admission (`admission.py`: the node is
  busy, most likely with a burst on these very seats) asks in any case: one
  shared read is cheap next to that wait, and needs no cache.
- The answer comes from one read of the show's state on the home master (one
  MULTI of its four keys, `seatstate.read_seat_state`), atomic at one instant
  that lies inside the request's lifetime: a request only uses a read sent
  after it arrived. If at that instant a requested seat was booked, blocked,
  or held until more than `CLOCK_MARGIN_MS` past the node's clock now, the hold
  script run at that instant would have refused, naming the same seats. So the
  409 is the answer the master would have given, with nothing changed, earlier.
  A hold ending within the margin (the node's clock may differ from the master's)
  makes the check undecided: the normal path answers.
- No grant ever comes from here: every hold that may succeed still runs the
  script on the master and is recorded by PostgreSQL, which decides.
- Concurrent requests for one show share one master read: a request joins the
  next read started after it arrived, never one already in flight (that read
  might predate it), so a burst costs a node one or two reads, not one per request.

The callers (`views.booking`) never refuse early a hold with an Idempotency-Key
(its own earlier attempt may hold the seats: a retry gets that hold; a reused key
is 422 first) or an invalid body (the normal path names the problem). An early
refusal costs about what a seat-map read costs, so it is counted against the
per-address read limit, not the write limits.
"""

from __future__ import annotations

import asyncio

from region_node import deadline
from region_node.catalog import ShowInfo
from region_node.errors import SeatsUnavailable
from region_node.home import REDIS_UNAVAILABLE
from region_node.limits import RateLimiter
from region_node.metrics import NodeMetrics
from region_node.seatcache import SeatCache
from region_node.seatstate import SeatState, now_ms, read_seat_state
from router.errors import RegionUnavailable
from router.registry import Connections

CLOCK_MARGIN_MS = 1000  # how far a node's clock may be from its masters' (NTP: far less)


def taken(state: SeatState, seat_ids: list[str]) -> list[str] | None:
    """The seats `state` shows not free; None if a hold ends too close to now to say."""
    now = now_ms()
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


class EarlyRefusal:
    def __init__(self, connections: Connections, cache: SeatCache, limiter: RateLimiter,
                 metrics: NodeMetrics) -> None:
        self._connections = connections
        self._cache = cache
        self._limiter = limiter
        self._metrics = metrics
        self._reads: dict[int, tuple[int, asyncio.Future[SeatState]]] = {}  # show -> running
        self._started = 0  # master reads started so far: orders reads against arrivals

    async def check(self, show: ShowInfo, seat_ids: list[str], address: str, *,
                    ask_master: bool) -> None:
        """SeatsUnavailable if the home master shows some of `seat_ids` taken; returns
        when they seem free or it cannot tell (then the hold itself decides). Without
        `ask_master` the master is asked only if the seat cache shows some taken."""
        if not ask_master:
            entry = self._cache.peek(show.id)
            if entry is None or not taken(entry.state, seat_ids):
                return
        self._limiter.check_read(address)
        arrived = self._started
        try:
            async with asyncio.timeout(deadline.current().left_for(show.region, "redis master")):
                state = await self._master_state(show, arrived)
        except (TimeoutError, RegionUnavailable):
            return  # the normal path answers, within the same deadline
        refused = taken(state, seat_ids) if state is not None else None
        if refused:
            self._metrics.holds.labels(self._metrics.region, show.region, "refused_early").inc()
            raise SeatsUnavailable(refused)

    async def _master_state(self, show: ShowInfo, arrived: int) -> SeatState | None:
        """The show's state read on its master after `arrived`; None if that read failed."""
        while True:
            running = self._reads.get(show.id)
            if running is None:
                return await self._read(show)
            number, future = running
            await asyncio.wait([future])
            if number > arrived:  # it started after this request arrived: share it
                return None if future.cancelled() else future.result()
            # It started before we arrived and may predate a release: use the next one.

    async def _read(self, show: ShowInfo) -> SeatState | None:
        self._started += 1
        future: asyncio.Future[SeatState] = asyncio.get_running_loop().create_future()
        self._reads[show.id] = (self._started, future)
        self._metrics.early_refusal_reads.labels(self._metrics.region, show.region).inc()
        try:
            state = await read_seat_state(self._connections.redis_master(show.region), show.id)
        except REDIS_UNAVAILABLE:
            future.cancel()  # those sharing it take the normal path, as we do
            return None
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._reads[show.id]
        future.set_result(state)
        return state
