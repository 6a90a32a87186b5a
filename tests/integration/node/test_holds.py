"""All-or-nothing holds, routed to the home region, under real contention."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp

from bookcluster.seats import keys
from bookcluster.stores.connections import make_redis
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import blocked_seat, seats_of, shows_in
from tests.integration.support import call, paid


async def hold(http: aiohttp.ClientSession, node: str, show_id: int, user: str,
               seats: list[str]) -> tuple[int, Any]:
    return await call(http, "POST", f"{node}/booking/seats/{show_id}/lock",
                      json={"user_id": user, "seat_ids": seats})


async def confirm(http: aiohttp.ClientSession, node: str, booking_id: str, key: str,
                  payment: str) -> tuple[int, Any]:
    """Confirm with the captured payment this test calls `payment` (see `paid`)."""
    payment_id = await paid(http, node, booking_id, payment)
    return await call(http, "POST", f"{node}/booking/booking/{booking_id}/confirm",
                      json={"payment_id": payment_id}, headers={"Idempotency-Key": key})


async def test_hold_is_all_or_nothing(clean: Cluster, http: aiohttp.ClientSession,
                                      catalog: Any) -> None:
    show = shows_in(clean, catalog, "west")[0]
    a1, a2, a3 = seats_of(catalog, show, 3)
    node = clean.node("west")
    status, first = await hold(http, node, show, "alice", [a1, a2])
    assert status == 201, first
    assert first["status"] == "INITIATED" and first["seat_ids"] == sorted([a1, a2])
    assert first["booking_id"].startswith(f"b{show}-") and first["hold_token"] > 0
    assert first["expires_at"]

    status, body = await hold(http, node, show, "bob", [a2, a3])
    assert status == 409
    assert body == {"error": "seats_unavailable", "message": body["message"], "seats": [a2]}
    # a3 was free, but nothing was held for bob: all or nothing.
    status, _ = await hold(http, node, show, "carol", [a3])
    assert status == 201


async def test_cross_region_hold_lands_only_in_home_region(clean: Cluster,
                                                           http: aiohttp.ClientSession,
                                                           catalog: Any) -> None:
    show = shows_in(clean, catalog, "south")[0]
    seats = seats_of(catalog, show, 2)
    status, body = await hold(http, clean.node("north"), show, "north-user", seats)
    assert status == 201 and body["region"] == "south"
    booking = body["booking_id"]
    for region in ("north", "south", "west"):
        rows = await clean.fetch(region, "SELECT id FROM booking WHERE id = $1", booking)
        assert len(rows) == (1 if region == "south" else 0), region
        redis = make_redis(clean.topology.region(region).redis_master, clean.topology.secrets)
        try:
            holds = await redis.hgetall(keys.show_holds(show))
        finally:
            await redis.aclose()
        assert (set(holds) == set(seats)) if region == "south" else not holds, region
    rows = await clean.fetch("south", "SELECT seat_id, status, hold_booking_id, fence_token "
                             "FROM show_seat WHERE show_id = $1 AND status = 'LOCKED' "
                             "ORDER BY seat_id", show)
    assert [r["seat_id"] for r in rows] == sorted(seats)
    assert {r["hold_booking_id"] for r in rows} == {booking}
    assert {r["fence_token"] for r in rows} == {body["hold_token"]}
    # Any node of any region reads it back.
    status, got = await call(http, "GET", f"{clean.node('west')}/booking/booking/{booking}")
    assert status == 200 and got["status"] == "INITIATED" and got["user_id"] == "north-user"


async def test_fencing_tokens_grow_per_hold(clean: Cluster, http: aiohttp.ClientSession,
                                            catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[0]
    seats = seats_of(catalog, show, 4)
    tokens = []
    for seat in seats:
        status, body = await hold(http, clean.node("north"), show, "u", [seat])
        assert status == 201
        tokens.append(body["hold_token"])
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


async def test_contention_across_all_regions(clean: Cluster, http: aiohttp.ClientSession,
                                             catalog: Any) -> None:
    """240 clients on 15 hot seats of one show, through nodes of all three regions."""
    show = shows_in(clean, catalog, "south")[0]
    hot = seats_of(catalog, show, 15)
    nodes = clean.nodes()
    rng = random.Random(7)
    requests = [(nodes[i % len(nodes)], f"user-{i}", rng.sample(hot, rng.randint(1, 4)))
                for i in range(240)]

    async def one(node: str, user: str, seats: list[str]) -> tuple[int, Any]:
        status, body = await hold(http, node, show, user, seats)
        if status == 201:
            await confirm(http, node, body["booking_id"], f"k-{user}", f"pay-{user}")
        return status, body

    results = await asyncio.gather(*(one(*r) for r in requests))
    statuses = [s for s, _ in results]
    assert set(statuses) <= {201, 409}, statuses
    assert statuses.count(201) >= 1
    held = [b for s, b in results if s == 201]
    # Every seat has at most one holder among the successful holds...
    claimed = [seat for b in held for seat in b["seat_ids"]]
    assert len(claimed) == len(set(claimed))
    # ...and PostgreSQL agrees: each seat sold at most once, to a CONFIRMED booking.
    sold = await clean.fetch(
        "south", "SELECT bs.seat_id, count(*) AS n, array_agg(b.status) AS statuses "
        "FROM booking_seat bs JOIN booking b ON b.id = bs.booking_id "
        "WHERE bs.show_id = $1 AND bs.sold GROUP BY bs.seat_id", show)
    assert all(r["n"] == 1 and r["statuses"] == ["CONFIRMED"] for r in sold)
    assert {r["seat_id"] for r in sold} == set(claimed)
    booked = await clean.fetch(
        "south", "SELECT seat_id, booked_booking_id FROM show_seat "
        "WHERE show_id = $1 AND status = 'BOOKED'", show)
    assert {r["seat_id"] for r in booked} == set(claimed)
    confirmed = await clean.fetch("south", "SELECT count(*) AS n FROM booking "
                                  "WHERE show_id = $1 AND status = 'CONFIRMED'", show)
    assert confirmed[0]["n"] == len(held)


async def test_opposite_orders_never_deadlock(clean: Cluster, http: aiohttp.ClientSession,
                                              catalog: Any) -> None:
    show = shows_in(clean, catalog, "west")[0]
    seats = seats_of(catalog, show, 6)
    nodes = clean.nodes()

    async def one(i: int) -> int:
        order = seats if i % 2 else list(reversed(seats))
        subset = order[i % 3: i % 3 + 4]
        status, body = await hold(http, nodes[i % len(nodes)], show, f"u{i}", subset)
        if status == 201:
            status, _ = await confirm(http, nodes[(i + 1) % len(nodes)], body["booking_id"],
                                      f"k{i}", f"p{i}")
            assert status == 200
        return status

    statuses = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(120))), 60)
    assert set(statuses) <= {200, 409}


async def test_blocked_seat_is_never_held(clean: Cluster, http: aiohttp.ClientSession,
                                          catalog: Any) -> None:
    found = None
    for region in ("north", "south", "west"):
        found = blocked_seat(catalog, shows_in(clean, catalog, region))
        if found:
            break
    assert found, "the test catalog should have a blocked seat"
    show, seat = found
    status, body = await hold(http, clean.node("west"), show, "u", [seat])
    assert status == 409 and body["seats"] == [seat]
