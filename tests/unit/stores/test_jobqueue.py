"""The admin views' job queues: one per region, closed with their owner (the node's app
context). Nothing here connects (a BullMQ queue's client dials on first use)."""

from __future__ import annotations

from pathlib import Path

from bookcluster.stores.jobqueue import Queues
from tests.unit.stores.test_connections import two_regions


async def test_one_queue_per_region_closed_with_its_owner(tmp_path: Path) -> None:
    topology = two_regions(tmp_path)
    async with Queues(topology) as queues:
        north = queues.get("north")
        assert queues.get("north") is north  # not one per call
        assert queues.get("south") is not north
        assert north.name == "jobs-north"
    try:
        queues.get("north")
    except RuntimeError:
        pass
    else:
        raise AssertionError("a closed Queues hands out a queue")
