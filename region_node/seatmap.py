"""Seat maps: the catalog layout joined with live seat state from the reader's region.

Reads go to this region's replica of the show's home master, so a seat-map
read never leaves the region; `consistent=True` reads the home master instead.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from region_node.catalog import Catalog, ShowInfo
from region_node.seatstate import SeatState, now_ms, read_seat_state
from router.errors import RegionUnavailable
from router.registry import Connections


class SeatMaps:
    def __init__(self, connections: Connections, catalog: Catalog) -> None:
        self._connections = connections
        self._catalog = catalog

    async def state(self, show: ShowInfo, consistent: bool = False) -> SeatState:
        if consistent:
            client = self._connections.redis_master(show.region)
            return await _read(client, show, show.region, "redis master")
        client = self._connections.redis_replica(show.region)
        return await _read(client, show, self._connections.local_region,
                           f"redis replica of {show.region}")

    async def seat_map(self, show: ShowInfo, consistent: bool = False) -> dict[str, Any]:
        state = await self.state(show, consistent)
        layout = await self._catalog.layout(show.screen_id)
        at = now_ms()
        seats = []
        counts: dict[str, int] = {}
        for seat in layout:
            status = state.status(seat.seat_id, at)
            counts[status] = counts.get(status, 0) + 1
            seats.append({"seat_id": seat.seat_id, "row": seat.row, "number": seat.number,
                          "category": seat.category, "price_paise": seat.price_paise,
                          "status": status})
        return {
            "show_id": show.id,
            "region": show.region,
            "version": state.version,
            "as_of": datetime.fromtimestamp(state.read_at, UTC).isoformat(),
            "source": "master" if consistent else f"replica@{self._connections.local_region}",
            "counts": counts,
            "seats": seats,
        }


async def _read(client: aioredis.Redis, show: ShowInfo, region: str, what: str) -> SeatState:
    try:
        return await read_seat_state(client, show.id)
    except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
        raise RegionUnavailable(region, what) from exc
