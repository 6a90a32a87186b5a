"""Catalog reads through any node of any region, and JSON error bodies."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.integration.conftest import Cluster
from tests.integration.node.helpers import shows_in
from tests.integration.support import REGIONS, bearer, call


async def test_every_node_lists_the_same_theatres_with_their_home_region(
        cluster: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    listings = []
    for node in cluster.nodes():
        status, body = await call(http, "GET", f"{node}/theatres")
        assert status == 200
        listings.append(body["theatres"])
    assert all(listing == listings[0] for listing in listings)
    assert {t["id"] for t in listings[0]} == {t.id for t in catalog.theatres}
    for theatre in listings[0]:
        assert theatre["region"] == cluster.placement.region_of(theatre["id"])
    assert {t["region"] for t in listings[0]} == {"north", "south", "west"}


async def test_filter_theatres_by_city_and_region(cluster: Cluster,
                                                  http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "GET", f"{cluster.node('west')}/theatres?region=south")
    assert status == 200 and body["count"] >= 1
    assert all(t["region"] == "south" for t in body["theatres"])
    city = body["theatres"][0]["city"]
    status, body = await call(http, "GET", f"{cluster.node('west')}/theatres?city={city}")
    assert all(t["city"] == city for t in body["theatres"])


async def test_south_theatre_read_through_a_north_node(cluster: Cluster,
                                                       http: aiohttp.ClientSession,
                                                       catalog: Any) -> None:
    show_id = shows_in(cluster, catalog, "south")[0]
    show = next(s for s in catalog.shows if s.id == show_id)
    theatre_id = catalog.theatre_of_screen()[show.screen_id]
    north = cluster.node("north")

    status, body = await call(http, "GET", f"{north}/theatres/{theatre_id}/shows")
    assert status == 200
    assert body["theatre"]["region"] == "south"
    assert show_id in [s["id"] for s in body["shows"]]

    status, body = await call(http, "GET", f"{north}/shows/{show_id}")
    assert status == 200
    assert body["theatre_id"] == theatre_id and body["region"] == "south"
    assert body["movie"]["title"] and body["screen"]["id"] == show.screen_id

    status, body = await call(http, "GET", f"{north}/shows/{show_id}/seats")
    assert status == 200
    expected = [s for s in catalog.seats if s.screen_id == show.screen_id]
    assert [s["seat_id"] for s in body["seats"]] == [s.seat_id for s in expected]
    for seat, want in zip(body["seats"], expected, strict=True):
        assert seat["row"] == want.row_label and seat["number"] == want.number
        assert seat["category"] == want.category and seat["price_paise"] == want.price_paise
        assert seat["status"] == ("UNAVAILABLE" if want.blocked else "AVAILABLE")
    assert 100 <= len(body["seats"]) <= 300
    assert body["source"] == "cache@north" and "version" in body and "as_of" in body


async def test_errors_are_json_with_codes(cluster: Cluster, http: aiohttp.ClientSession) -> None:
    node = cluster.node("west")
    cases = [
        ("GET", "/shows/abc", 400, "malformed_id"),
        ("GET", "/shows/0", 400, "malformed_id"),
        ("GET", "/shows/99999999", 404, "not_found"),
        ("GET", "/shows/99999999/seats", 404, "not_found"),
        ("GET", "/theatres/Not_A_Theatre/shows", 400, "malformed_id"),
        ("GET", "/theatres/atlantis-01/shows", 404, "not_found"),
        ("GET", "/no/such/route", 404, "not_found"),
        ("DELETE", "/theatres", 405, "method_not_allowed"),
        ("GET", "/booking/booking/not-a-booking", 400, "malformed_id"),
        ("GET", "/booking/booking/b99999999-0123456789abcdef", 404, "not_found"),
        ("GET", "/shows/1001/seats?consistent=maybe", 422, "invalid_input"),
    ]
    for method, path, status, code in cases:
        async with http.request(method, f"{node}{path}", headers=bearer("erin")) as resp:
            assert resp.status == status, path
            assert resp.content_type == "application/json", path
            body = await resp.json()
            assert body["error"] == code, path
            assert body["message"], path


async def test_health_ready_and_metrics(cluster: Cluster, http: aiohttp.ClientSession) -> None:
    node = cluster.node("south")
    assert (await call(http, "GET", f"{node}/healthz"))[0] == 200
    status, body = await call(http, "GET", f"{node}/readyz")
    assert status == 200 and body["checks"] == {
        "redis": "ok", "postgres": "ok", "listener": {r: "ok" for r in REGIONS}}
    assert all(listener["subscribed"] for listener in body["listeners"].values())
    await call(http, "GET", f"{node}/shows/abc")
    async with http.get(f"{node}/metrics") as resp:
        text = await resp.text()
    assert 'bookcluster_http_requests_total{method="GET",region="south",' \
           'route="/shows/{show_id}",status="400"}' in text
    assert "bookcluster_http_request_seconds_bucket" in text
