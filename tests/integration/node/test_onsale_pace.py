"""The admitter's pace follows its home primary: slower when the primary is slowed,
back by itself when it is not.

An admitter of north runs in the test process against the session cluster's real
stores, its PostgreSQL connections through a WAN proxy (`devsim/wanproxy`) whose delay
the test turns up and down: the same measure the region's worker takes each round.
The assertions compare rates (slowed well below unslowed), not absolute timings.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry

from bookcluster.booking.admitter import Admitter, AdmitterMetrics
from bookcluster.devsim.wanproxy import Link, ProxySet
from bookcluster.seats.home import HomeRegion
from bookcluster.stores.connections import Connections, route_key
from bookcluster.topology.model import Endpoint
from tests.integration.conftest import Cluster

REGION = "north"
CEILING = 40.0
DELAY_MS = 60  # one way: every round trip to the primary pays 120 ms
ROUNDS = 40


async def test_the_rate_falls_while_the_home_primary_is_slow_and_recovers(
        cluster: Cluster) -> None:
    members = cluster.topology.region(REGION).pg_members
    links = [Link(f"pg{i}", "127.0.0.1", 0, m.host, m.port) for i, m in enumerate(members)]
    async with ProxySet(links) as proxies:
        routes = {route_key(REGION, m): Endpoint("127.0.0.1", proxies.link(f"pg{i}").listen_port)
                  for i, m in enumerate(members)}
        async with Connections(cluster.topology, REGION, routes) as connections:
            admitter = Admitter(connections, REGION, HomeRegion(connections),
                                AdmitterMetrics(CollectorRegistry()), CEILING)

            async def settle(until: Callable[[float], bool]) -> float:
                rate = 0.0
                for _ in range(ROUNDS):
                    rate = await admitter.pace()
                    if until(rate):
                        break
                return rate

            fast = await settle(lambda r: r == CEILING)
            assert fast > CEILING / 2, f"unslowed, the rate was {fast}"
            await proxies.update_all(delay_ms=DELAY_MS)
            slow = await settle(lambda r: r < fast / 4)
            # 120 ms round trips against a 20 ms target: a sixth of the ceiling at most.
            assert slow < fast / 4, (fast, slow)
            assert slow > 0  # it slows down, it does not stop
            await proxies.update_all(delay_ms=0)
            back = await settle(lambda r: r > CEILING / 2)
            assert back > CEILING / 2, (fast, slow, back)
