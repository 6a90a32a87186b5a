"""Refunds of confirmed bookings, against the session cluster: before entry the seats
go back on sale, the payment is refunded at the gateway by the refund job and the
ticket is refused at the door; after entry the refund is refused and changes nothing;
asked again it answers the same; a refund and a door scan at once: exactly one wins,
and the audit finds the database whole."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from bookcluster.booking import ledger
from bookcluster.node.auth import OPERATOR
from bookcluster.ops.audit import run_audit
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_checkin import gate_token, scan, theatre_of
from tests.integration.node.test_holds import confirm, hold
from tests.integration.support import bearer, call

REFUND_TIMEOUT_S = 15.0  # the refund job: outbox -> worker -> gateway -> REFUNDED


async def confirmed(http: aiohttp.ClientSession, clean: Cluster, show: int, user: str,
                    seats: list[str]) -> dict[str, Any]:
    status, held = await hold(http, clean.node("west"), show, user, seats)
    assert status == 201, held
    status, body = await confirm(http, clean.node("west"), held["booking_id"], f"k-{user}",
                                 f"p-{user}")
    assert status == 200, body
    return dict(body)


async def refund(http: aiohttp.ClientSession, node: str, booking: str, user: str,
                 roles: tuple[str, ...] = (), key: str | None = None
                 ) -> tuple[int, Any, Mapping[str, str]]:
    headers = {**bearer(user, roles), **({"Idempotency-Key": key} if key else {})}
    async with http.post(f"{node}/booking/booking/{booking}/refund", headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers


async def state(clean: Cluster, booking: str) -> dict[str, Any]:
    """The booking's status, its sale's payment status, its seats' statuses, sold rows."""
    rows = await clean.fetch(
        "west", "SELECT b.status, p.status AS paid, "
        "ARRAY(SELECT ss.status || ':' || coalesce(ss.booked_booking_id, '') "
        "      FROM show_seat ss JOIN booking_seat bs ON bs.show_id = ss.show_id "
        "      AND bs.seat_id = ss.seat_id WHERE bs.booking_id = b.id ORDER BY ss.seat_id) "
        "  AS seats, (SELECT count(*) FROM booking_seat bs WHERE bs.booking_id = b.id "
        "             AND bs.sold) AS sold "
        "FROM booking b LEFT JOIN payment p ON p.id = b.payment_id WHERE b.id = $1", booking)
    return dict(rows[0])


async def test_a_refund_before_entry_frees_the_seats_refunds_and_the_door_refuses(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "west")[0]
    seats = seats_of(catalog, show, 2)
    sale = await confirmed(http, clean, show, "rhea", seats)
    booking = sale["booking_id"]
    # Another user's refund: not revealed; through another region's node (forwarded).
    status, body, _ = await refund(http, clean.node("north"), booking, "mallory")
    assert (status, body["error"]) == (404, "not_found"), body
    status, body, headers = await refund(http, clean.node("north"), booking, "rhea",
                                         key="r-1")
    assert status == 200, body
    assert (body["status"], body["seat_ids"], body["refund"]["payment_id"]) == (
        "CANCELLED", seats, sale["payment_id"]), body
    assert "Idempotent-Replayed" not in headers
    # Asked again (same key, no key, another node): the same answer.
    for node, key in ((clean.node("west"), "r-1"), (clean.node("south"), None)):
        status, again, headers = await refund(http, node, booking, "rhea", key=key)
        assert (status, again, headers.get("Idempotent-Replayed")) == (200, body, "true")
    now = await state(clean, booking)
    assert (now["status"], now["sold"], now["seats"]) == ("CANCELLED", 0,
                                                          ["AVAILABLE:"] * len(seats)), now
    # The seats are for sale again: another user holds them (the home master knows).
    status, held = await hold(http, clean.node("west"), show, "sid", seats)
    assert status == 201, held
    # The refund job refunds at the gateway: the payment ends REFUNDED.
    deadline = time.monotonic() + REFUND_TIMEOUT_S
    while (await state(clean, booking))["paid"] != "REFUNDED":
        assert time.monotonic() < deadline, await state(clean, booking)
        await asyncio.sleep(0.2)
    status, mine = await call(http, "GET", f"{clean.node('west')}/booking/booking/{booking}",
                              user="rhea")
    assert [p["status"] for p in mine["payments"]] == ["REFUNDED"], mine
    # The QR refuses at the door.
    status, body = await scan(http, clean.node("west"), sale["ticket"]["payload"],
                              gate_token((theatre_of(catalog, show),)))
    assert (status, body["error"]) == (409, "refunded"), body
    report = await run_audit(clean.topology)
    assert report.exit_code == 0, report.violations


async def test_a_refund_after_entry_is_refused_and_changes_nothing(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "west")[1]
    seats = seats_of(catalog, show)
    sale = await confirmed(http, clean, show, "tara", seats[:2])
    status, body = await scan(http, clean.node("west"), sale["ticket"]["payload"],
                              gate_token((theatre_of(catalog, show),)))
    assert (status, body["outcome"]) == (200, "admitted"), body
    before = await state(clean, sale["booking_id"])
    for user, roles in (("tara", ()), ("root", (OPERATOR,))):
        status, body, _ = await refund(http, clean.node("south"), sale["booking_id"], user,
                                       roles)
        assert (status, body["error"]) == (409, "ticket_used"), body
    assert await state(clean, sale["booking_id"]) == before
    assert before["status"] == "CONFIRMED" and before["paid"] == "CAPTURED", before
    # A held booking is not refunded; an operator refunds anyone's confirmed booking.
    status, held = await hold(http, clean.node("west"), show, "tara", seats[2:3])
    status, body, _ = await refund(http, clean.node("west"), held["booking_id"], "tara")
    assert (status, body["error"], body["status"]) == (409, "booking_not_confirmed",
                                                       "INITIATED"), body
    other = await confirmed(http, clean, show, "uma", seats[3:5])
    status, body, _ = await refund(http, clean.node("west"), other["booking_id"], "root",
                                   (OPERATOR,))
    assert (status, body["status"], body["user_id"]) == (200, "CANCELLED", "uma"), body
    # Past the show's refund cut-off (the session cluster keeps refunds open after the
    # start; the rule is bc_refund's, asked here with a cut-off gone by): nothing changes.
    third = await confirmed(http, clean, show, "vic", seats[5:6])
    before = await state(clean, third["booking_id"])
    pg = await clean.pg("west")
    try:
        row = await ledger.refund(pg, show=show, booking=third["booking_id"], user="vic",
                                  reason="test", region="west",
                                  closes_at=datetime.now(UTC) - timedelta(seconds=1),
                                  deadline=datetime.now(UTC) + timedelta(seconds=30),
                                  epoch=None)
    finally:
        await pg.close()
    assert row.outcome == ledger.RefundOutcome.REFUND_CLOSED
    assert await state(clean, third["booking_id"]) == before
    # The audit finds a refund of an admitted booking (planted: the rules refuse it).
    await clean.fetch("west", "UPDATE payment SET status = 'REFUND_PENDING' WHERE id = $1",
                      sale["payment_id"])
    found = [v for v in (await run_audit(clean.topology)).violations
             if v.check == "refund_after_entry"]
    assert [sale["booking_id"] in v.detail for v in found] == [True], found


async def test_a_refund_and_a_scan_at_once_exactly_one_wins(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "west")[0]
    seats = seats_of(catalog, show)
    users = [f"racer{i}" for i in range(6)]
    sales = await asyncio.gather(*(confirmed(http, clean, show, u, seats[2 * i:2 * i + 2])
                                   for i, u in enumerate(users)))
    gate = gate_token((theatre_of(catalog, show),))
    nodes = clean.nodes()

    async def race(i: int, sale: dict[str, Any]) -> tuple[int, Any, int, Any]:
        (r_status, r_body, _), (s_status, s_body) = await asyncio.gather(
            refund(http, nodes[i % len(nodes)], sale["booking_id"], users[i]),
            scan(http, nodes[(i + 1) % len(nodes)], sale["ticket"]["payload"], gate))
        return r_status, r_body, s_status, s_body

    results = await asyncio.gather(*(race(i, s) for i, s in enumerate(sales)))
    for (r_status, r_body, s_status, s_body), sale in zip(results, sales, strict=True):
        now = await state(clean, sale["booking_id"])
        if r_status == 200:
            assert (s_status, s_body["error"]) == (409, "refunded"), s_body
            assert now["status"] == "CANCELLED" and now["sold"] == 0, now
        else:
            assert (r_status, r_body["error"]) == (409, "ticket_used"), r_body
            assert (s_status, s_body["outcome"]) == (200, "admitted"), s_body
            assert now["status"] == "CONFIRMED" and now["paid"] == "CAPTURED", now
    report = await run_audit(clean.topology)
    assert report.exit_code == 0, report.violations
