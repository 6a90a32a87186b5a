"""One real cluster per test session: Redis masters and replicas, PostgreSQL,
and app nodes in three regions, started through the same launcher as
`bookcluster up`. Each test starts from seeded state (`reset_cluster`).
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio

from bookcluster.local.launcher import LocalCluster
from bookcluster.ops.demo_catalog import CITIES, CatalogSpec, build_catalog, slug
from bookcluster.ops.reset import reset_cluster
from bookcluster.stores.connections import connect_primary
from bookcluster.topology.load import load_topology
from bookcluster.topology.model import Endpoint, Topology
from bookcluster.topology.placement import Placement
from tests.integration.mailrelay import Relay
from tests.integration.support import free_ports, topology_yaml, use_topology

# Two cities per region, one theatre each, one day of two shows per screen.
TEST_CATALOG = CatalogSpec(theatres_per_city=1, cities_per_region=2, days=1, shows_per_day=2)
SHORT_TTL_S = 1.5
# Caps as shipped; rates high enough that tests of one user under load (50 at once)
# reach the caps, not the bucket or their share of a node's writes; test_trust.py drains
# a bucket on purpose, test_fair_limits.py starts a node of its own with tight limits.
# Loopback lifts the per-address caps (`bookcluster/local/loopback.py`).
TEST_LIMITS = """\
  seats_per_show: 10
  holds_per_user: 4
  user_writes_at_once: 64
  user_writes: {per_second: 50, burst: 100}
  ip_writes: {per_second: 100000, burst: 100000}
  ip_reads: {per_second: 100000, burst: 100000}
"""


@dataclass
class Cluster:
    topology: Topology
    launcher: LocalCluster
    placement: Placement
    short_ttl_node: str  # URL of a north node whose holds last SHORT_TTL_S

    def nodes(self, region: str | None = None) -> list[str]:
        regions = [region] if region else list(self.topology.regions)
        return [f"http://{ep.host}:{ep.port}"
                for r in regions for ep in self.topology.region(r).nodes]

    def node(self, region: str, index: int = 0) -> str:
        return self.nodes(region)[index]

    async def pg(self, region: str) -> asyncpg.Connection:
        return await connect_primary(self.topology.region(region).pg_members,
                                     self.topology.secrets)

    async def fetch(self, region: str, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await self.pg(region)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()


def _theatre_map() -> dict[str, str]:
    """Explicit map for all but one seeded theatre; the last is placed by the ring."""
    mapping = {}
    for region, cities in CITIES.items():
        for city, _state, _ in cities[: TEST_CATALOG.cities_per_region]:
            mapping[f"{slug(city)}-01"] = region
    mapping.pop(sorted(mapping)[-1])
    return mapping


@pytest.fixture(scope="session")
def run_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bookcluster-test-") as tmp:
        Path(tmp).chmod(0o755)  # PostgreSQL's unprivileged user must reach its data
        yield Path(tmp)


@pytest.fixture(scope="session")
def smtp_relay() -> Iterator[Relay]:
    """The SMTP relay the session cluster's workers send every mail through."""
    with Relay() as relay:
        yield relay


@pytest_asyncio.fixture(scope="session")
async def cluster(run_dir: Path, smtp_relay: Relay) -> AsyncIterator[Cluster]:
    path = run_dir / "topology.yaml"
    path.write_text(topology_yaml(run_dir / "run", nodes=2, standby=("north",),
                                  theatres=_theatre_map(),
                                  extra_settings="  sweep_interval: 500ms\n"
                                  f"  smtp_relay: {smtp_relay.endpoint}\n"
                                  "  access_log: true\n"
                                  # Seeded shows are today: check-in open all day.
                                  "  checkin_opens_before: 48h\n"
                                  "  checkin_closes_after: 48h\n"
                                  # ... and refunds open until long after the start.
                                  "  refund_closes_before: -48h\n", workers=True,
                                  limits=TEST_LIMITS))
    topology = load_topology(path)
    launcher = LocalCluster(topology, catalog=TEST_CATALOG, progress=lambda _: None)
    await launcher.start()
    use_topology(topology)
    try:
        port = free_ports(1)[0]
        await launcher.start_extra_node("north", Endpoint("127.0.0.1", port),
                                        ["--hold-ttl", f"{SHORT_TTL_S}s"])
        yield Cluster(topology, launcher, Placement(topology), f"http://127.0.0.1:{port}")
    finally:
        launcher.stop()


@pytest_asyncio.fixture
async def clean(cluster: Cluster) -> Cluster:
    """The session cluster with bookings dropped and seats back to seeded state."""
    await reset_cluster(cluster.topology)
    return cluster


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        yield session


@pytest.fixture(scope="session")
def catalog() -> Any:
    from datetime import date
    return build_catalog(TEST_CATALOG, date.today())


# -- where the suite's time goes ------------------------------------------------------
# The suite has a 20-minute budget on a 2-core box; per-module totals (set-up of the
# module's own clusters included) show what to shorten, in every CI log.
_SECONDS_BY_MODULE: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    module = report.nodeid.split("::")[0]
    _SECONDS_BY_MODULE[module] = _SECONDS_BY_MODULE.get(module, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _SECONDS_BY_MODULE:
        return
    terminalreporter.section("seconds per test module (set-up and tear-down included)")
    ranked = sorted(_SECONDS_BY_MODULE.items(), key=lambda item: -item[1])
    for module, seconds in ranked[:40]:
        terminalreporter.write_line(f"{seconds:8.1f}  {module}")
    terminalreporter.write_line(f"{sum(_SECONDS_BY_MODULE.values()):8.1f}  in all")
