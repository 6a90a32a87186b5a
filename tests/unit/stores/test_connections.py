"""The connection registry's clients, as made (nothing here connects: redis-py and
asyncpg pools with min_size=0 dial on first use)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from redis.asyncio.sentinel import SentinelConnectionPool

from bookcluster.stores.connections import Connections
from bookcluster.topology.load import load_topology
from bookcluster.topology.model import Topology
from bookcluster.topology.secrets import generate_local
from tests.integration.support import topology_yaml


def two_regions(tmp_path: Path) -> Topology:
    path = tmp_path / "topology.yaml"
    path.write_text(topology_yaml(tmp_path / "run", regions=("north", "south")))
    generate_local(tmp_path / "run")
    return load_topology(path)


async def test_a_region_added_at_run_time_gets_a_master_that_follows_sentinel(
        tmp_path: Path) -> None:
    grown = two_regions(tmp_path)
    first = replace(grown, epoch=grown.epoch - 1,
                    regions=MappingProxyType({"north": grown.regions["north"]}))
    connections = await Connections(first, "north").open()
    try:
        assert isinstance(connections.redis_master("north").connection_pool,
                          SentinelConnectionPool)
        await connections.adopt(grown)
        added = connections.redis_master("south").connection_pool
        # Not a fixed address: the sentinels say where south's master is now.
        assert isinstance(added, SentinelConnectionPool), type(added)
        assert added.service_name == "south"
        assert connections.topology is grown
    finally:
        await connections.close()
