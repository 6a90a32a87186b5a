"""Adding a region to a running cluster: an apply, then moves. Never fresh seeding: a
theatre that sold seats elsewhere arrives with its sales, and they stay sold. Processes
that took the region at run time follow its master through a failover, as they follow
those of the regions they started with.

Its own cluster (a region is added to it): about 40 s, so `slow`
(`.venv/bin/pytest -m slow tests/integration/cluster/test_add_region.py`).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from bookcluster.local.ports import free_ports
from bookcluster.ops import apply, moves
from bookcluster.ops.audit import run_audit
from bookcluster.ops.ownership import connect
from bookcluster.stores import sentinel_api
from bookcluster.topology.load import load_topology
from tests.integration.cluster.movable import epoch_of, movable_cluster, owner_rows, shows_of
from tests.integration.cluster.test_moves import hold, sell
from tests.integration.node.helpers import seats_of
from tests.integration.support import call

FOLLOW_TIMEOUT_S = 20.0  # bound on finding a region's new master after a failover


async def master_map(http: aiohttp.ClientSession, node: str, show: int) -> tuple[int, Any]:
    """The seat map of `show` read at its home master (`consistent=true`) through `node`,
    retried while it answers 503 (the client finds the new master), up to a bound."""
    deadline = time.monotonic() + FOLLOW_TIMEOUT_S
    while True:
        status, body = await call(http, "GET", f"{node}/shows/{show}/seats?consistent=true",
                                  anonymous=True)
        if status != 503 or time.monotonic() > deadline:
            return status, body
        await asyncio.sleep(0.2)


def with_region(text: str, name: str) -> str:
    """The topology `text` at the next epoch with region `name` added on free ports: its
    stores, one node and a worker; every region gets a replica of its master."""
    doc = yaml.safe_load(text)
    regions = doc["regions"]
    ports = iter(free_ports(len(regions) * 2 + 8))
    for region in regions.values():
        region["redis"]["replicas"][name] = f"127.0.0.1:{next(ports)}"
    regions[name] = {
        "redis": {"master": f"127.0.0.1:{next(ports)}",
                  "replicas": {src: f"127.0.0.1:{next(ports)}" for src in [*regions, name]}},
        "postgres": {"primary": f"127.0.0.1:{next(ports)}",
                     "patroni": [f"127.0.0.1:{next(ports)}"],
                     "etcd": [f"127.0.0.1:{next(ports)}", f"127.0.0.1:{next(ports)}"]},
        "nodes": [f"127.0.0.1:{next(ports)}"],
        "worker": f"127.0.0.1:{next(ports)}",
    }
    doc["epoch"] += 1
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.mark.slow
async def test_add_a_region_then_move_a_theatre_with_sold_seats_into_it(
        catalog: Any, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    async with movable_cluster("bookcluster-east-", nodes=1) as cluster:
        theatre = "pune-01"
        show = shows_of(catalog, theatre)[0]
        sold_seats, free = seats_of(catalog, show, 3)[:2], seats_of(catalog, show, 3)[2]
        west = cluster.node("west")
        status, booking = await hold(http, west, show, "nina", sold_seats)
        assert status == 201, booking
        status, body = await sell(http, west, booking, "nina-1")
        assert status == 200, body

        file = tmp_path / "with-east.yaml"
        file.write_text(with_region(cluster.topology.path.read_text(), "east"))
        grown = load_topology(file, run_dir=cluster.topology.settings.run_dir)
        await cluster.launcher.add_region(grown, "east")
        conn = await connect(grown, "east")
        try:
            assert await conn.fetchval("SELECT count(*) FROM theatre") > 0  # the catalog
            assert await conn.fetchval("SELECT count(*) FROM show_seat") == 0  # no seats
            assert await conn.fetchval("SELECT count(*) FROM theatre_owner") == 0
        finally:
            await conn.close()

        assert await apply.apply_command(cluster.topology, file) == 0
        east = f"http://{grown.region('east').nodes[0]}"
        for node in [*cluster.nodes(), east]:
            assert await epoch_of(http, node) == grown.epoch

        await moves.move_command(grown, theatre, "east", progress=lambda _: None)
        assert (await owner_rows(cluster, theatre))["west"][0] == "MOVED"
        for node in (east, cluster.node("north"), west):
            status, refused = await hold(http, node, show, "oscar", sold_seats[:1])
            assert status == 409 and refused["seats"] == sold_seats[:1], refused
        status, got = await call(http, "GET", f"{west}/booking/booking/{booking['booking_id']}",
                                 user="nina")
        assert status == 200 and got["status"] == "CONFIRMED" and got["region"] == "east"
        status, new = await hold(http, cluster.node("north"), show, "oscar", [free])
        assert status == 201 and new["region"] == "east", new
        status, body = await sell(http, east, new, "oscar-1")
        assert status == 200, body
        report = await run_audit(load_topology(cluster.topology.path), grace_s=30)
        assert not report.violations and not report.unreachable, report.as_dict()
        assert "east" in report.regions

        # East's master fails over (a switchover, then the old master stops): nodes that
        # took east at run time reach the new one (a client with the old address would
        # answer 503 from now on).
        old, new_master = await sentinel_api.switchover(grown, "east")
        assert new_master != old
        cluster.launcher.stop_child(sentinel_api.server_name(grown, old))
        for node in (cluster.node("north"), west, east):
            status, seats = await master_map(http, node, show)
            assert status == 200 and seats["source"] == "master", (node, status, seats)
            assert {s["seat_id"]: s["status"] for s in seats["seats"]}[free] == "BOOKED"
