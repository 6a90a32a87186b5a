"""The worker's `/readyz` follows its loops, with real processes (a cluster of the
module's own: north only, one node, its worker).

The region's Redis master is frozen (SIGSTOP) longer than the reconciler's bound
(it reads the master every round): `/readyz` turns 503 naming it, while `/healthz`
still answers 200 (the process lives). After SIGCONT every loop succeeds again and
`/readyz` is 200. Sentinel's down-after (30 s) is longer than the freeze: the master
stays where it was.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from bookcluster.local import faults
from bookcluster.ops.demo_catalog import CatalogSpec
from tests.integration.conftest import Cluster
from tests.integration.own_cluster import own_cluster

REGION = "north"
SPEC = CatalogSpec(theatres_per_city=1, cities_per_region=1, days=1, shows_per_day=1)
LOOPS = {"jobs", "leases", "sweeper", "mirror", "reconciler", "watch", "stores", "topology",
         "moves", "onsale-admitter", "heads"}
WAIT_S = 30.0  # bound on every wait here (a stale bound is 10 s, the topology poll's 25 s)


@pytest_asyncio.fixture(scope="module")
async def small() -> AsyncIterator[Cluster]:
    async with own_cluster("bookcluster-readyz-", SPEC, regions=(REGION,), nodes=1,
                           workers=True) as cluster:
        yield cluster


def worker_url(cluster: Cluster) -> str:
    endpoint = cluster.topology.region(REGION).worker
    assert endpoint is not None
    return f"http://{endpoint}"


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as resp:
        return resp.status, await resp.json(content_type=None)


async def wait_for(http: aiohttp.ClientSession, url: str, status: int,
                   also: Any = lambda body: True) -> Any:
    deadline = time.monotonic() + WAIT_S
    last: tuple[int, Any] | None = None
    while time.monotonic() < deadline:
        last = await get(http, url)
        if last[0] == status and also(last[1]):
            return last[1]
        await asyncio.sleep(0.5)
    raise AssertionError(f"{url} did not answer {status} within {WAIT_S}s; last: {last}")


@pytest.mark.timeout(240)
async def test_readyz_names_a_loop_whose_store_is_frozen(small: Cluster) -> None:
    url = worker_url(small)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        # Every loop has succeeded once (the topology poll's first look is 5 s in).
        ready = await wait_for(http, f"{url}/readyz", 200, lambda body: all(
            loop["last_success"] is not None for loop in body["loops"].values()))
        assert set(ready["loops"]) == LOOPS and ready["stale"] == []
        assert ready["region"] == REGION

        master = small.launcher.child(f"{REGION}.redis.master")
        with faults.paused(master.pid):
            stale = await wait_for(http, f"{url}/readyz", 503,
                                   lambda body: "reconciler" in body["stale"])
            assert stale["status"] == "stale"
            assert stale["loops"]["reconciler"]["stale"]
            assert set(stale["stale"]) <= LOOPS and "topology" not in stale["stale"]
            status, health = await get(http, f"{url}/healthz")
            assert status == 200 and health["status"] == "ok"  # alive, not ready

        back = await wait_for(http, f"{url}/readyz", 200)
        assert back["stale"] == []
        assert back["loops"]["reconciler"]["last_success"] > \
            stale["loops"]["reconciler"]["last_success"]
        async with http.get(f"{url}/metrics") as resp:
            text = await resp.text()
        samples = {(s.name, s.labels.get("loop")): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples
                   if s.labels.get("region") == REGION}
        # Scraped after /readyz answered: the same last success, or a later one.
        assert samples[("bookcluster_loop_last_success_seconds", "reconciler")] >= \
            back["loops"]["reconciler"]["last_success"]
        assert ("bookcluster_loop_failures_total", "reconciler") in samples
