"""The seat maps own their availability computations: `close` cancels what still runs.
Nothing here connects (redis-py and asyncpg pools with min_size=0 dial on first use)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bookcluster.catalog import Catalog, ShowInfo
from bookcluster.metrics import NodeMetrics
from bookcluster.seats.maps import SeatMaps
from bookcluster.stores.connections import Connections
from bookcluster.topology.placement import Placement
from tests.unit.stores.test_connections import two_regions


async def test_an_availability_whose_callers_gave_up_is_cancelled_at_close(
        tmp_path: Path) -> None:
    topology = two_regions(tmp_path)
    connections = await Connections(topology, "north").open()
    try:
        maps = SeatMaps(connections, Catalog(connections, Placement(topology)),
                        NodeMetrics("north"))
        started, finished = asyncio.Event(), asyncio.Event()

        async def slow(shows: list[ShowInfo]) -> dict[int, dict[str, Any]]:
            started.set()
            await asyncio.Event().wait()
            finished.set()
            return {}

        maps._compute_availability = slow  # type: ignore[method-assign]
        caller = asyncio.create_task(maps.availability("delhi-01", []))
        await started.wait()
        caller.cancel()  # the request went away; the computation goes on (shared)
        await asyncio.gather(caller, return_exceptions=True)
        running = [t for t in asyncio.all_tasks() if t.get_name() == "availability-delhi-01"]
        assert len(running) == 1 and not running[0].done()
        await maps.close()
        assert running[0].cancelled() and not finished.is_set()
    finally:
        await connections.close()
