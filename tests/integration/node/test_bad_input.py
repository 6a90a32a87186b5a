"""Every kind of bad input: a 4xx JSON error, and nothing changed anywhere."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from bookcluster.seats import keys
from bookcluster.stores.connections import make_redis
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_holds import hold
from tests.integration.support import bearer, call


async def nothing_changed(cluster: Cluster, show: int) -> None:
    region = cluster.placement.region_of(
        (await cluster.fetch("north", "SELECT sc.theatre_id FROM show s JOIN screen sc "
                             "ON sc.id = s.screen_id WHERE s.id = $1", show))[0]["theatre_id"])
    assert not await cluster.fetch(region, "SELECT 1 FROM booking")
    assert not await cluster.fetch(region, "SELECT 1 FROM show_seat WHERE status = 'LOCKED'")
    redis = make_redis(cluster.topology.region(region).redis_master, cluster.topology.secrets)
    try:
        assert await redis.hgetall(keys.show_holds(show)) == {}
    finally:
        await redis.aclose()


@pytest.mark.parametrize(("body", "code"), [
    ({"user_id": "u", "seat_ids": []}, "invalid_input"),
    ({"user_id": "u", "seat_ids": ["A1", "A1"]}, "invalid_input"),
    ({"user_id": "u", "seat_ids": ["Z99"]}, "invalid_input"),
    ({"user_id": "u", "seat_ids": ["A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8", "A9", "A10",
                                   "A11"]}, "invalid_input"),
    ({"user_id": "", "seat_ids": ["A1"]}, "invalid_input"),
    ({"user_id": "someone-else", "seat_ids": ["A1"]}, "invalid_input"),
    ({"seat_ids": []}, "invalid_input"),
    ({"user_id": "u", "seat_ids": "A1"}, "invalid_input"),
    ({"user_id": "u", "seat_ids": [1, 2]}, "invalid_input"),
    (["not", "an", "object"], "invalid_input"),
])
async def test_bad_hold_requests(clean: Cluster, http: aiohttp.ClientSession, catalog: Any,
                                 body: Any, code: str) -> None:
    show = shows_in(clean, catalog, "south")[0]
    status, answer = await call(http, "POST", f"{clean.node('north')}/booking/seats/{show}/lock",
                                json=body, user="u")
    assert status == 422 and answer["error"] == code and answer["message"]
    await nothing_changed(clean, show)


async def test_unknown_seat_is_named(clean: Cluster, http: aiohttp.ClientSession,
                                     catalog: Any) -> None:
    show = shows_in(clean, catalog, "west")[0]
    good = seats_of(catalog, show, 1)[0]
    status, body = await hold(http, clean.node("west"), show, "u", [good, "Z99"])
    assert status == 422 and body["seats"] == ["Z99"] and body["field"] == "seat_ids"
    await nothing_changed(clean, show)


async def test_malformed_json_and_ids(clean: Cluster, http: aiohttp.ClientSession,
                                      catalog: Any) -> None:
    node = clean.node("north")
    show = shows_in(clean, catalog, "north")[0]
    async with http.post(f"{node}/booking/seats/{show}/lock", data=b"{not json",
                         headers=bearer("u")) as resp:
        assert resp.status == 422 and (await resp.json())["error"] == "invalid_input"
    status, body = await call(http, "POST", f"{node}/booking/seats/x1/lock",
                              json={"user_id": "u", "seat_ids": ["A1"]})
    assert status == 400 and body["error"] == "malformed_id"
    status, body = await call(http, "POST", f"{node}/booking/seats/99999999/lock",
                              json={"user_id": "u", "seat_ids": ["A1"]})
    assert status == 404 and body["error"] == "not_found"
    await nothing_changed(clean, show)


async def test_bad_confirm_requests(clean: Cluster, http: aiohttp.ClientSession,
                                    catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[0]
    node = clean.node("south")
    _, held = await hold(http, node, show, "u", seats_of(catalog, show, 1))
    url = f"{node}/booking/booking/{held['booking_id']}/confirm"
    status, body = await call(http, "POST", url, json={"payment_id": "p"})
    assert status == 400 and body["error"] == "missing_header"
    for bad in ({}, {"payment_id": ""}, {"payment_id": 7}):
        status, body = await call(http, "POST", url, json=bad, headers={"Idempotency-Key": "k"})
        assert status == 422 and body["error"] == "invalid_input"
    status, body = await call(http, "POST", f"{node}/booking/booking/b{show}-0000000000000000"
                              "/confirm", json={"payment_id": "p"},
                              headers={"Idempotency-Key": "k"}, user="u")
    assert status == 404 and body["error"] == "not_found"
    status, body = await call(http, "POST", f"{node}/booking/booking/garbage/confirm",
                              json={"payment_id": "p"}, headers={"Idempotency-Key": "k"},
                              user="u")
    assert status == 400 and body["error"] == "malformed_id"
    rows = await clean.fetch("north", "SELECT status FROM booking")
    assert [r["status"] for r in rows] == ["INITIATED"]
    assert not await clean.fetch("north", "SELECT 1 FROM idempotency")
    assert not await clean.fetch("north", "SELECT 1 FROM payment")
