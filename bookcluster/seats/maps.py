"""Seat maps: the catalog layout joined with live seat state, served from the node's cache.

State comes from this region's replica of the show's home master (reads
stay home); if that replica cannot answer, from the home master itself.
`consistent=True` always reads the home master. Every map says its
`version` and `as_of` (when the node last knew the state was current).

Availability badges are computed in tasks the maps own (one per theatre at a time,
shared by its callers, going on when a caller gives up): `close` cancels and awaits
whatever still runs.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from bookcluster.catalog import Catalog, SeatInfo, ShowInfo
from bookcluster.metrics import NodeMetrics
from bookcluster.seats.cache import DEFAULT_CAPACITY, Entry, SeatCache
from bookcluster.seats.mapjson import encode_map
from bookcluster.seats.state import SeatState, now_ms, read_seat_state
from bookcluster.stores.connections import Connections
from bookcluster.topology.errors import RegionUnavailable

FILLING_FAST_SHARE = 0.2  # "filling fast" below this share of seats left
AVAILABILITY_TTL_S = 2.0  # micro-cache of per-show availability badges
REDIS_ERRORS = (aioredis.ConnectionError, aioredis.TimeoutError, OSError)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class SeatMaps:
    def __init__(self, connections: Connections, catalog: Catalog, metrics: NodeMetrics,
                 capacity: int = DEFAULT_CAPACITY) -> None:
        self._connections = connections
        self._catalog = catalog
        self._metrics = metrics
        self.cache = SeatCache(capacity, on_evict=metrics.cache_evictions.inc)
        metrics.cache_entries.set_function(lambda: len(self.cache))
        self._availability: dict[str, tuple[float, dict[int, dict[str, Any]]]] = {}
        self._availability_runs: dict[str, asyncio.Task[dict[int, dict[str, Any]]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def region(self) -> str:
        return self._connections.local_region

    async def _read_local(self, show: ShowInfo) -> SeatState:
        self._metrics.cache_fills.labels(self.region, show.region).inc()
        try:
            return await read_seat_state(self._connections.redis_replica(show.region), show.id)
        except REDIS_ERRORS:
            self._metrics.replica_fallbacks.labels(self.region, show.region).inc()
            return await self._read_master(show)

    async def _read_master(self, show: ShowInfo) -> SeatState:
        try:
            return await read_seat_state(self._connections.redis_master(show.region), show.id)
        except REDIS_ERRORS as exc:
            raise RegionUnavailable(show.region, "redis master and local replica") from exc

    async def entry(self, show: ShowInfo) -> Entry:
        async def load(_: int) -> SeatState:
            return await self._read_local(show)

        entry, hit = await self.cache.get(show.id, load)
        self._metrics.cache_lookups.labels(self.region, "hit" if hit else "miss").inc()
        return entry

    async def seat_map(self, show: ShowInfo, consistent: bool = False) -> dict[str, Any]:
        if consistent:
            state = await self._read_master(show)
            return self._render(show, state, state.read_at, "master",
                                await self._catalog.layout(show.screen_id))
        entry = await self.entry(show)
        return self._render(show, entry.state, entry.verified_at, f"cache@{self.region}",
                            await self._catalog.layout(show.screen_id))

    async def seat_map_body(self, show: ShowInfo) -> bytes:
        """The cached map as JSON bytes (`mapjson.py`), rendered once per version (and per
        hold expiry)."""
        entry = await self.entry(show)
        memo = entry.rendered.get("body")
        at = now_ms()
        if memo is not None and at < memo[0]:
            return memo[1]  # type: ignore[no-any-return]
        layout = await self._catalog.layout(show.screen_id)
        body = encode_map(self._head(show, entry.state, entry.verified_at, f"cache@{self.region}"),
                          entry.state, layout, at)
        live = [exp for _, exp in entry.state.holds.values() if exp > at]
        entry.rendered["body"] = (min(live, default=1 << 62), body)
        return body

    def _render(self, show: ShowInfo, state: SeatState, as_of: float, source: str,
                layout: tuple[SeatInfo, ...]) -> dict[str, Any]:
        at = now_ms()
        seats: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        for seat in layout:
            status = state.status(seat.seat_id, at)
            counts[status] = counts.get(status, 0) + 1
            seats.append({"seat_id": seat.seat_id, "row": seat.row, "number": seat.number,
                          "category": seat.category, "price_paise": seat.price_paise,
                          "position": seat.position, "accessible": seat.accessible,
                          "status": status})
        return {**self._head(show, state, as_of, source), "counts": counts, "seats": seats}

    @staticmethod
    def _head(show: ShowInfo, state: SeatState, as_of: float, source: str) -> dict[str, Any]:
        return {"show_id": show.id, "region": show.region, "version": state.version,
                "as_of": _iso(as_of), "source": source}

    async def availability(self, theatre_id: str,
                           shows: list[ShowInfo]) -> dict[int, dict[str, Any]]:
        """Seats left per show, from the cache or the local replica; micro-cached briefly.

        One computation per theatre at a time (later callers await it), and the
        shows' replica reads run concurrently.
        """
        cached = self._availability.get(theatre_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        running = self._availability_runs.get(theatre_id)
        if running is not None:
            return await asyncio.shield(running)
        task = asyncio.create_task(self._compute_availability(shows),
                                   name=f"availability-{theatre_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._availability_runs[theatre_id] = task
        try:
            out = await asyncio.shield(task)
        finally:
            self._availability_runs.pop(theatre_id, None)
        self._availability[theatre_id] = (time.monotonic() + AVAILABILITY_TTL_S, out)
        return out

    async def _compute_availability(self, shows: list[ShowInfo]) -> dict[int, dict[str, Any]]:
        async def badge(show: ShowInfo) -> dict[str, Any] | None:
            try:  # through the seat cache: the next map of this show is then a hit too
                state = (await self.entry(show)).state
            except RegionUnavailable:
                return None  # no badge beats a wrong one
            layout = await self._catalog.layout(show.screen_id)
            at = now_ms()
            statuses = [state.status(s.seat_id, at) for s in layout]
            sellable = len(statuses) - statuses.count("UNAVAILABLE")
            left = statuses.count("AVAILABLE")
            return {"seats_left": left, "seats_total": sellable,
                    "filling_fast": 0 < left < sellable * FILLING_FAST_SHARE,
                    "sold_out": left == 0}

        badges = await asyncio.gather(*(badge(show) for show in shows))
        return {show.id: b for show, b in zip(shows, badges, strict=True) if b is not None}

    async def close(self) -> None:
        """Cancel and await the availability computations still running."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
