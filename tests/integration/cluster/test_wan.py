"""`--wan-delay`: cross-region links pay a real delay; local reads and writes do not."""

from __future__ import annotations

import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio

from bookcluster.local.launcher import LocalCluster
from bookcluster.node.auth import mint
from bookcluster.ops.demo_catalog import CatalogSpec, build_catalog
from bookcluster.topology.load import load_topology
from bookcluster.topology.placement import Placement
from tests.integration.support import call, topology_yaml

DELAY_MS = 40
SMALL = CatalogSpec(theatres_per_city=1, cities_per_region=1, days=1, shows_per_day=1)


@pytest_asyncio.fixture(scope="module")
async def wan_cluster() -> AsyncIterator[LocalCluster]:
    with tempfile.TemporaryDirectory(prefix="bookcluster-wan-") as tmp:
        Path(tmp).chmod(0o755)
        path = Path(tmp) / "topology.yaml"
        path.write_text(topology_yaml(Path(tmp) / "run", regions=("north", "south"), nodes=1))
        cluster = LocalCluster(load_topology(path), catalog=SMALL, wan_delay_ms=DELAY_MS,
                               progress=lambda _: None)
        await cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()


def show_in(cluster: LocalCluster, region: str) -> tuple[int, str]:
    from datetime import date
    catalog = build_catalog(SMALL, date.today())
    placement = Placement(cluster.topology)
    theatre_of = catalog.theatre_of_screen()
    show = next(s for s in catalog.shows if placement.region_of(theatre_of[s.screen_id]) == region)
    seat = next(s.seat_id for s in catalog.seats if s.screen_id == show.screen_id and not s.blocked)
    return show.id, seat


async def timed(http: aiohttp.ClientSession, method: str, url: str,
                **kwargs: Any) -> tuple[float, int, Any]:
    started = time.perf_counter()
    status, body = await call(http, method, url, **kwargs)
    return (time.perf_counter() - started) * 1000, status, body


async def test_remote_writes_pay_the_wan_local_ones_do_not(wan_cluster: LocalCluster) -> None:
    north = wan_cluster.topology.region("north").nodes[0]
    node = f"http://{north.host}:{north.port}"
    local_show, local_seat = show_in(wan_cluster, "north")
    remote_show, remote_seat = show_in(wan_cluster, "south")
    # This cluster has its own keys: a token of the session cluster would be refused.
    token = {"Authorization": f"Bearer {mint(wan_cluster.topology, 'u', 600)}"}
    async with aiohttp.ClientSession() as http:
        for show in (local_show, remote_show):
            await call(http, "GET", f"{node}/shows/{show}/seats")  # warm caches and pools
        local_ms, status, _ = await timed(http, "POST", f"{node}/booking/seats/{local_show}/lock",
                                          json={"seat_ids": [local_seat]}, headers=token)
        assert status == 201
        remote_ms, status, _ = await timed(http, "POST",
                                           f"{node}/booking/seats/{remote_show}/lock",
                                           json={"seat_ids": [remote_seat]}, headers=token)
        assert status == 201
        read_ms, status, body = await timed(http, "GET", f"{node}/shows/{remote_show}/seats")
        assert status == 200
        # The remote hold crossed the WAN at least once each way (Redis, then PostgreSQL).
        assert remote_ms >= 2 * DELAY_MS, (local_ms, remote_ms)
        assert local_ms < 2 * DELAY_MS, local_ms
        assert read_ms < 2 * DELAY_MS, read_ms
        # The north replica of south's master follows through the proxy too.
        seats = {s["seat_id"]: s["status"] for s in body["seats"]}
        assert seats[remote_seat] == "LOCKED"


async def test_proxy_is_listed_and_controllable(wan_cluster: LocalCluster) -> None:
    proxy = wan_cluster.child("wan.proxy")
    async with aiohttp.ClientSession() as http:
        status, links = await call(http, "GET", f"{proxy.spec.address}/links")
    assert status == 200
    names = {link["name"] for link in links}
    assert {"north->south.redis.master", "north->south.postgres.primary",
            "south->north.redis.master", "south->north.postgres.primary"} <= names
    assert {link["delay_ms"] for link in links} == {DELAY_MS}
