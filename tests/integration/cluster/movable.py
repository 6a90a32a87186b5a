"""A dedicated cluster whose topology tests may change (epochs, theatre moves), and
helpers to read where things live. The session cluster is left alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from bookcluster.ops.demo_catalog import CITIES, slug
from tests.integration.conftest import TEST_CATALOG, TEST_LIMITS, Cluster
from tests.integration.own_cluster import own_cluster


def theatre_map(regions: tuple[str, ...] = ("north", "south", "west")) -> dict[str, str]:
    """Every theatre of the test catalog mapped explicitly to its region."""
    return {f"{slug(city)}-01": region for region in regions
            for city, _state, _ in CITIES[region][: TEST_CATALOG.cities_per_region]}


@asynccontextmanager
async def movable_cluster(prefix: str, *, nodes: int = 2,
                          standby: tuple[str, ...] = (),
                          settings: str = "") -> AsyncIterator[Cluster]:
    # Nodes look for a missed epoch only when a write answers MOVED (no poll): a
    # test of that path must not race the poll.
    async with own_cluster(prefix, TEST_CATALOG, node_args=["--topology-poll", "1h"],
                           nodes=nodes, theatres=theatre_map(), workers=True,
                           standby=standby,
                           limits=TEST_LIMITS,
                           extra_settings="  sweep_interval: 500ms\n"
                           # Seeded shows are today: check-in open all day.
                           "  checkin_opens_before: 48h\n"
                           "  checkin_closes_after: 48h\n" + settings) as cluster:
        yield cluster


def shows_of(catalog: Any, theatre: str) -> list[int]:
    screens = {s.id for s in catalog.screens if s.theatre_id == theatre}
    return [s.id for s in catalog.shows if s.screen_id in screens]


async def epoch_of(http: aiohttp.ClientSession, address: str) -> int | None:
    async with http.get(f"{address}/healthz") as resp:
        body = await resp.json()
    return body.get("epoch")


async def owner_rows(cluster: Cluster, theatre: str) -> dict[str, tuple[str, int, str | None]]:
    """Each region's record of `theatre`: (state, epoch, owner)."""
    out = {}
    for region in cluster.topology.regions:
        rows = await cluster.fetch(region, "SELECT state, epoch, owner FROM theatre_owner "
                                   "WHERE theatre_id = $1", theatre)
        if rows:
            out[region] = (rows[0]["state"], rows[0]["epoch"], rows[0]["owner"])
    return out
