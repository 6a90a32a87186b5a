"""Seat maps served from each region's own replicas and node caches, live over WebSockets."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from bookcluster.local import faults
from bookcluster.seats import keys
from bookcluster.stores.connections import make_redis
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_holds import confirm, hold
from tests.integration.support import call, metric


async def seat_status(http: aiohttp.ClientSession, node: str,
                      show: int) -> tuple[int, dict[str, str]]:
    status, body = await call(http, "GET", f"{node}/shows/{show}/seats")
    assert status == 200, body
    return body["version"], {s["seat_id"]: s["status"] for s in body["seats"]}


async def invalidate(cluster: Cluster, show: int) -> None:
    """Make every node forget a show: a RESET change on its home master."""
    region = cluster.placement.region_of(next(
        r["theatre_id"] for r in await cluster.fetch(
            "north", "SELECT sc.theatre_id FROM show s JOIN screen sc ON sc.id = s.screen_id "
            "WHERE s.id = $1", show)))
    redis = make_redis(cluster.topology.region(region).redis_master, cluster.topology.secrets)
    try:
        version = await redis.incr(keys.show_version(show))
        await redis.publish(keys.SEAT_CHANGES_CHANNEL, json.dumps(
            {"show": show, "version": version, "status": "RESET", "seats": []}))
    finally:
        await redis.aclose()
    await asyncio.sleep(0.2)


async def test_cache_follows_every_change_without_refilling(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "south")[0]
    a, b = seats_of(catalog, show, 2)
    west = clean.node("west")
    version, seats = await seat_status(http, west, show)
    assert seats[a] == "AVAILABLE"
    fills = await metric(http, west, "bookcluster_seat_cache_fills_total")

    _, held = await hold(http, clean.node("south"), show, "u", [a, b])
    await asyncio.sleep(0.3)
    v1, seats = await seat_status(http, west, show)
    assert (v1, seats[a], seats[b]) == (version + 1, "LOCKED", "LOCKED")
    await confirm(http, clean.node("north"), held["booking_id"], "k", "p")
    await asyncio.sleep(0.3)
    v2, seats = await seat_status(http, west, show)
    assert (v2, seats[a]) == (version + 2, "BOOKED")
    assert await metric(http, west, "bookcluster_seat_cache_fills_total") == fills
    assert await metric(http, west, "bookcluster_change_delay_seconds_count",
                        source="south", region="west") >= 2


async def test_reads_stay_home_while_the_home_region_is_stopped(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "south")[1]
    seat = seats_of(catalog, show, 1)[0]
    await hold(http, clean.node("south"), show, "u", [seat])
    await invalidate(clean, show)  # cold in every node's cache
    master = clean.launcher.child("south.redis.master").pid
    primary = clean.launcher.child("south.postgres.1").pid
    with faults.paused(master), faults.paused(primary):
        started = time.monotonic()
        _, seats = await seat_status(http, clean.node("north"), show)  # a cold read
        assert time.monotonic() - started < 1.0
        assert seats[seat] == "LOCKED"
        status, body = await hold(http, clean.node("north"), show, "v",
                                  seats_of(catalog, show, 3)[1:])
        assert status == 503 and body["region"] == "south"


async def test_single_flight_per_node(clean: Cluster, http: aiohttp.ClientSession,
                                      catalog: Any) -> None:
    show = shows_in(clean, catalog, "west")[1]
    await invalidate(clean, show)
    nodes = [clean.node("north"), clean.node("west")]
    before = {n: await metric(http, n, "bookcluster_seat_cache_fills_total") for n in nodes}
    results = await asyncio.gather(*(call(http, "GET", f"{nodes[i % 2]}/shows/{show}/seats")
                                     for i in range(1000)))
    assert {status for status, _ in results} == {200}
    for node in nodes:
        after = await metric(http, node, "bookcluster_seat_cache_fills_total")
        assert after - before[node] == 1, node


async def test_lost_subscription_drops_that_regions_shows(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "south")[0]
    north = clean.node("north")
    await seat_status(http, north, show)
    fills = await metric(http, north, "bookcluster_seat_cache_fills_total")
    resets = await metric(http, north, "bookcluster_subscription_resets_total", source="south")
    replica = make_redis(clean.topology.region("north").redis_replicas["south"],
                         clean.topology.secrets)
    try:
        await replica.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    finally:
        await replica.aclose()
    for _ in range(50):
        if await metric(http, north, "bookcluster_subscription_resets_total",
                        source="south") > resets:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the node did not resubscribe")
    await seat_status(http, north, show)
    assert await metric(http, north, "bookcluster_seat_cache_fills_total") == fills + 1
    # And it hears changes again.
    seat = seats_of(catalog, show, 1)[0]
    await hold(http, clean.node("south"), show, "u", [seat])
    await asyncio.sleep(0.3)
    assert (await seat_status(http, north, show))[1][seat] == "LOCKED"


async def test_consistent_read_comes_from_the_home_master(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[0]
    seat = seats_of(catalog, show, 1)[0]
    await hold(http, clean.node("north"), show, "u", [seat])
    status, body = await call(http, "GET", f"{clean.node('west')}/shows/{show}/seats"
                              "?consistent=true")
    assert status == 200 and body["source"] == "master"
    assert next(s for s in body["seats"] if s["seat_id"] == seat)["status"] == "LOCKED"


async def test_availability_badges(clean: Cluster, http: aiohttp.ClientSession,
                                   catalog: Any) -> None:
    show = shows_in(clean, catalog, "west")[0]
    theatre = catalog.theatre_of_screen()[next(s for s in catalog.shows
                                               if s.id == show).screen_id]
    url = f"{clean.node('south')}/theatres/{theatre}/shows"
    _, body = await call(http, "GET", url)
    badge = next(s for s in body["shows"] if s["id"] == show)["availability"]
    total = badge["seats_total"]
    assert badge["seats_left"] == total and not badge["filling_fast"]
    await hold(http, clean.node("west"), show, "u", seats_of(catalog, show, 3))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the badge is micro-cached for 2 s at most
        _, body = await call(http, "GET", url)
        badge = next(s for s in body["shows"] if s["id"] == show)["availability"]
        if badge["seats_left"] == total - 3:
            break
        await asyncio.sleep(0.25)
    assert badge["seats_left"] == total - 3


async def receive(ws: aiohttp.ClientWebSocketResponse, within: float = 1.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=within)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)  # type: ignore[no-any-return]


async def test_live_socket_on_west_sees_a_hold_made_through_south(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[0]
    a, b, c = seats_of(catalog, show, 3)
    async with http.ws_connect(f"{clean.node('west')}/shows/{show}/live") as ws:
        snapshot = await receive(ws)
        assert snapshot["type"] == "snapshot" and snapshot["show_id"] == show
        assert {s["seat_id"]: s["status"] for s in snapshot["seats"]}[a] == "AVAILABLE"
        started = time.monotonic()
        _, held = await hold(http, clean.node("south"), show, "u", [a, b])
        delta = await receive(ws, within=1.0)
        assert time.monotonic() - started < 1.0
        assert delta == {**delta, "type": "delta", "show_id": show, "status": "LOCKED",
                         "version": snapshot["version"] + 1, "seats": [a, b]}
        await confirm(http, clean.node("north"), held["booking_id"], "k", "p")
        await hold(http, clean.node("west"), show, "v", [c])
        versions = [(await receive(ws))["version"] for _ in range(2)]
        assert versions == [snapshot["version"] + 2, snapshot["version"] + 3]
        await ws.send_str(json.dumps({"type": "resync"}))
        again = await receive(ws)
        assert again["type"] == "snapshot" and again["version"] == snapshot["version"] + 3
        assert {s["seat_id"]: s["status"] for s in again["seats"]}[a] == "BOOKED"


async def test_two_thousand_sockets_on_one_show(clean: Cluster, catalog: Any) -> None:
    show = shows_in(clean, catalog, "south")[0]
    node = clean.node("north")
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        sockets = []
        try:
            for batch in range(20):
                sockets += await asyncio.gather(*(
                    session.ws_connect(f"{node}/shows/{show}/live") for _ in range(100)))
                del batch
            snapshots = await asyncio.gather(*(receive(ws, 10) for ws in sockets))
            assert {s["type"] for s in snapshots} == {"snapshot"}
            assert await metric(session, node, "bookcluster_live_sockets") >= 2000
            # The node still serves reads while holding them...
            started = time.monotonic()
            reads = await asyncio.gather(*(call(session, "GET", f"{node}/shows/{show}/seats")
                                           for _ in range(50)))
            assert {status for status, _ in reads} == {200}
            assert time.monotonic() - started < 5
            # ...and fans a change out to every socket.
            await hold(session, clean.node("south"), show, "u", seats_of(catalog, show, 1))
            deltas = await asyncio.gather(*(receive(ws, 10) for ws in sockets))
            assert {d["type"] for d in deltas} == {"delta"}
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets))
