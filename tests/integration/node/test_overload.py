"""Overload is not an error: many clients on one seat get one 201 and 409s, never a 503.

Before bounded Redis pools and write admission, a few hundred concurrent holds on
one home node overflowed redis-py's pool (100 connections, MaxConnectionsError) and
the losers got 503 `region_unavailable` from a healthy master. Early refusals
(`bookcluster/booking/contention.py`) must answer from the home master, never from a node's
possibly stale cache alone.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp

from bookcluster.local import faults
from bookcluster.seats import keys
from bookcluster.stores.connections import make_redis
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_holds import hold
from tests.integration.node.test_seatmaps import seat_status
from tests.integration.support import call, metric

RUSH = 300  # concurrent holds per wave: enough to overflow the old pool on 2 home nodes


async def rush(http: aiohttp.ClientSession, nodes: list[str], show: int, seat: str,
               tag: str) -> list[tuple[int, Any]]:
    """RUSH holds of `seat` at once, each by its own user, spread over `nodes`."""
    start = asyncio.Event()

    async def one(i: int) -> tuple[int, Any]:
        await start.wait()
        return await hold(http, nodes[i % len(nodes)], show, f"{tag}-{i}", [seat])

    tasks = [asyncio.ensure_future(one(i)) for i in range(RUSH)]
    await asyncio.sleep(0)  # every task waits on the event: they start together
    start.set()
    return await asyncio.wait_for(asyncio.gather(*tasks), 60)


def assert_one_winner(answers: list[tuple[int, Any]], seat: str, winners: int) -> None:
    statuses = Counter(status for status, _ in answers)
    assert statuses == Counter({201: winners, 409: RUSH - winners}), statuses
    for status, body in answers:
        if status == 409:
            assert body["error"] == "seats_unavailable" and body["seats"] == [seat], body


async def holds_in_postgres(cluster: Cluster, show: int, seat: str) -> list[str]:
    rows = await cluster.fetch(
        "north", "SELECT b.id FROM booking b JOIN booking_seat bs ON bs.booking_id = b.id "
        "WHERE b.show_id = $1 AND bs.seat_id = $2 AND b.status = 'INITIATED'", show, seat)
    return [r["id"] for r in rows]


async def test_a_rush_on_one_seat_gets_one_hold_and_only_409s(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[0]
    first, second = seats_of(catalog, show, 2)
    nodes = clean.nodes()  # two thirds of the holds are forwarded to north's two nodes

    answers = await rush(http, nodes, show, first, "cold")
    assert_one_winner(answers, first, 1)
    (winner,) = [body["booking_id"] for status, body in answers if status == 201]
    assert await holds_in_postgres(clean, show, first) == [winner]
    rows = await clean.fetch("north", "SELECT status, hold_booking_id FROM show_seat "
                             "WHERE show_id = $1 AND seat_id = $2", show, first)
    assert [tuple(r) for r in rows] == [("LOCKED", winner)]

    # Now every node caches the show (clients look before they pick) and sees `first`
    # held: a second rush on it is refused early, still one 409 per client and no hold.
    refused = sum([await metric(http, n, "bookcluster_holds_total", outcome="refused_early")
                   for n in nodes])
    for node in nodes:
        assert (await seat_status(http, node, show))[1][first] == "LOCKED"
    assert_one_winner(await rush(http, nodes, show, first, "again"), first, 0)
    assert await holds_in_postgres(clean, show, first) == [winner]
    assert sum([await metric(http, n, "bookcluster_holds_total", outcome="refused_early")
                for n in nodes]) > refused

    # A seat nobody held yet, while the nodes cache the show: one winner again.
    assert_one_winner(await rush(http, nodes, show, second, "warm"), second, 1)
    assert len(await holds_in_postgres(clean, show, second)) == 1


async def test_a_stale_seat_cache_never_refuses_a_free_seat(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    """West's nodes hear north's changes on west's replica of north's master. Paused,
    their caches keep showing a released seat held; a hold through them still gets it,
    because only the home master's own state refuses early."""
    show = shows_in(clean, catalog, "north")[0]
    seat = seats_of(catalog, show, 1)[0]
    west = clean.node("west")
    status, held = await hold(http, clean.node("north"), show, "first", [seat])
    assert status == 201, held
    while (await seat_status(http, west, show))[1][seat] != "LOCKED":
        await asyncio.sleep(0.05)
    with faults.paused(clean.launcher.child("west.redis.replica.north").pid):
        status, _ = await call(http, "POST",
                               f"{west}/booking/booking/{held['booking_id']}/cancel")
        assert status == 200
        assert (await seat_status(http, west, show))[1][seat] == "LOCKED"  # stale
        status, body = await hold(http, west, show, "second", [seat])
        assert (await seat_status(http, west, show))[1][seat] == "LOCKED"  # still stale
    assert status == 201, body
    assert await holds_in_postgres(clean, show, seat) == [body["booking_id"]]


async def test_rate_limits_load_their_script_again_after_a_script_flush(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    """The limiter sends EVALSHA alone (no SCRIPT EXISTS first): a master that lost its
    scripts (restart, failover) answers NOSCRIPT once, and the limiter loads it again."""
    show = shows_in(clean, catalog, "north")[0]
    seat = seats_of(catalog, show, 1)[0]
    redis = make_redis(clean.topology.region("north").redis_master, clean.topology.secrets)
    try:
        await redis.script_flush()
        status, body = await hold(http, clean.node("north"), show, "flushed", [seat])
        assert status == 201, body
        assert float(await redis.hget(keys.rate_bucket("user", "flushed"), "tokens")) >= 0
    finally:
        await redis.aclose()
