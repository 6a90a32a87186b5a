"""A dedicated cluster whose topology tests may change (epochs, theatre moves), and
helpers to read where things live. The session cluster is left alone."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from cluster.demo_catalog import CITIES, slug
from cluster.launcher import LocalCluster
from router.placement import Placement
from router.topology import load_topology
from tests.conftest import TEST_CATALOG, TEST_LIMITS, Cluster
from tests.support import Session, topology_yaml, use_topology


def theatre_map(regions: tuple[str, ...] = ("north", "south", "west")) -> dict[str, str]:
    """Every theatre of the test catalog mapped explicitly to its region."""
    return {f"{slug(city)}-01": region for region in regions
            for city, _state, _ in CITIES[region][: TEST_CATALOG.cities_per_region]}


@asynccontextmanager
async def movable_cluster(prefix: str, *, nodes: int = 2) -> AsyncIterator[Cluster]:
    previous = Session.topology
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        Path(tmp).chmod(0o755)  # PostgreSQL's unprivileged user must reach its data
        path = Path(tmp) / "topology.yaml"
        path.write_text(topology_yaml(Path(tmp) / "run", nodes=nodes, theatres=theatre_map(),
                                      workers=True, limits=TEST_LIMITS,
                                      extra_settings="  sweep_interval: 500ms\n"))
        topology = load_topology(path)
        # Nodes look for a missed epoch only when a write answers MOVED (no poll): a
        # test of that path must not race the poll.
        launcher = LocalCluster(topology, catalog=TEST_CATALOG, progress=lambda _: None,
                                node_args=["--topology-poll", "1h"])
        await launcher.start()
        use_topology(topology)  # tokens and payments of this cluster
        try:
            yield Cluster(topology, launcher, Placement(topology), short_ttl_node="")
        finally:
            launcher.stop()
            if previous is not None:
                use_topology(previous)


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
