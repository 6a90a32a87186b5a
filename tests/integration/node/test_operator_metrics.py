"""What the alert rules (deploy/prometheus/alerts.yml) read, from a live cluster: each
region's worker reports a writable leader per store and every copy's lag; every node and
worker reports its secret files present."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Cluster

WITHIN_S = 15.0  # the worker's watch runs every second, its first a second in


async def samples(http: aiohttp.ClientSession, address: str,
                  name: str) -> list[tuple[dict[str, str], float]]:
    async with http.get(f"{address}/metrics") as resp:
        text = await resp.text()
    return [(s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name]


async def eventually_samples(http: aiohttp.ClientSession, address: str, name: str,
                             enough: Any) -> list[tuple[dict[str, str], float]]:
    deadline = asyncio.get_running_loop().time() + WITHIN_S
    while True:
        found = await samples(http, address, name)
        if enough(found) or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.2)


async def test_the_worker_sees_its_leaders_and_their_copies(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    topology = cluster.topology
    worker = topology.region("north").worker
    assert worker is not None
    url = f"http://{worker.host}:{worker.port}"
    reachable = await eventually_samples(
        http, url, "bookcluster_store_reachable",
        lambda found: sum(v for _, v in found) == 2)
    assert {(labels["store"], value) for labels, value in reachable} == \
        {("redis", 1.0), ("postgres", 1.0)}
    # Every replica of north's master, in whichever region it runs, acknowledges bytes.
    replicas = {f"{ep.host}:{ep.port}" for region in topology.regions.values()
                for source, ep in region.redis_replicas.items() if source == "north"}
    lags = await eventually_samples(
        http, url, "bookcluster_redis_replica_lag_bytes",
        lambda found: {labels["replica"] for labels, _ in found} >= replicas)
    assert {labels["replica"] for labels, _ in lags} == replicas
    assert all(value >= 0 for _, value in lags)
    standbys = await eventually_samples(http, url, "bookcluster_pg_standby_lag_bytes", bool)
    assert len(standbys) == 1 and standbys[0][1] >= 0  # north runs one standby


async def test_every_process_reports_its_secret_files_present(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    worker = cluster.topology.region("south").worker
    assert worker is not None
    for address, needs in ((cluster.node("west"), {"forward_secret", "jwt_secret"}),
                           (f"http://{worker.host}:{worker.port}", {"ticket_secret"})):
        present = await samples(http, address, "bookcluster_secret_file_present")
        names = {labels["name"] for labels, _ in present}
        assert needs | {"redis_password", "pg_password"} <= names
        assert all(value == 1.0 for _, value in present)
