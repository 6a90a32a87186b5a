"""The door scanner page (`/scan`) in Chromium whose fake camera shows a real ticket's
PNG (as the API serves it): a genuine ticket is admitted with its seats, then refused as
already admitted; a refunded and a forged ticket are refused with the reason; offline,
the gate admits by signature alone and, back online, shows the batch's double entry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from bookcluster.booking import ticket_keys, tickets
from bookcluster.node.auth import mint
from tests.integration.conftest import Cluster
from tests.integration.node.test_checkin import altered, scan, sold, theatre_of
from tests.integration.support import Session, bearer
from tests.integration.web.camera import ScannerPages, batch_reported, verdict
from tests.integration.web.conftest import Shots, _missing


def scanner_token(theatre: str, user: str = "gate-7") -> str:
    assert Session.topology is not None
    return mint(Session.topology, user, 600, ("scanner",), (theatre,))


async def ticket_png(http: aiohttp.ClientSession, node: str, booking: str, user: str) -> bytes:
    async with http.get(f"{node}/booking/booking/{booking}/ticket",
                        headers=bearer(user)) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


@pytest_asyncio.fixture
async def scanner(tmp_path: Path) -> AsyncIterator[Any]:
    """Opens /scan signed in as a gate, in a Chromium whose camera shows a PNG."""
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    async with ScannerPages(tmp_path) as pages:
        yield pages.open
    assert not pages.errors, f"JavaScript errors: {pages.errors}"


async def fits_the_phone(page: Any) -> bool:
    return bool(await page.evaluate(
        "document.documentElement.scrollWidth <= window.innerWidth"))


async def test_a_ticket_on_camera_is_admitted_once(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any, scanner: Any,
        shots: Shots) -> None:
    show, confirmed = await sold(clean, http, catalog, "cam-amy", 0)
    booking = confirmed["booking_id"]
    png = await ticket_png(http, clean.node("west"), booking, "cam-amy")
    # A north node: the scan is forwarded to the show's home region (west).
    page = await scanner(f"{clean.node('north')}/scan", png,
                         scanner_token(theatre_of(catalog, show)), "door-a")
    first = await verdict(page, "admit")
    assert first["word"] == "ADMIT" and first["code"] == "admitted", first
    assert all(seat in first["seats"] for seat in confirmed["seat_ids"]), first
    assert first["offline"] == "false"
    assert await fits_the_phone(page)
    await shots.take(page, "admitted")
    # The same ticket again (the next person shows the same PNG): refused, saying where.
    await page.click("#next")
    again = await verdict(page, "refuse")
    assert again["word"] == "REFUSED" and again["code"] == "already_admitted", again
    assert "Already admitted" in again["reason"] and "door-a" in again["reason"], again
    await shots.take(page, "already-admitted")
    rows = await clean.fetch("west", "SELECT outcome, gate FROM checkin_scan "
                             "WHERE booking_id = $1 ORDER BY id", booking)
    assert [(r["outcome"], r["gate"]) for r in rows] == [("admitted", "door-a"),
                                                         ("already_admitted", "door-a")]


async def test_refunded_and_forged_tickets_on_camera_are_refused(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any, scanner: Any,
        shots: Shots) -> None:
    show, confirmed = await sold(clean, http, catalog, "cam-ben", 0)
    booking, payload = confirmed["booking_id"], confirmed["ticket"]["payload"]
    token = scanner_token(theatre_of(catalog, show))
    png = await ticket_png(http, clean.node("west"), booking, "cam-ben")
    pg = await clean.pg("west")
    try:
        await pg.execute("UPDATE payment SET status = 'REFUND_PENDING' WHERE booking_id = $1",
                         booking)
    finally:
        await pg.close()
    page = await scanner(f"{clean.node('west')}/scan", png, token, "door-r")
    refunded = await verdict(page, "refuse")
    assert refunded["code"] == "refunded" and "refunded" in refunded["reason"], refunded
    await shots.take(page, "refunded")
    # A ticket drawn as ours are, signed by a key that is not ours but naming ours.
    forger = ticket_keys.KeyRing(["west"], "not the cluster's secret")
    forged = ticket_keys.sign(forger.signing("west"), booking, show, "x",
                              confirmed["seat_ids"], 0)
    forged = altered(forged, {"k": ticket_keys.key_of(payload)})
    page = await scanner(f"{clean.node('west')}/scan", tickets.draw(forged, ["Forged"]),
                         token, "door-f")
    refused = await verdict(page, "refuse")
    assert refused["code"] == "bad_signature" and "Forged" in refused["reason"], refused
    await shots.take(page, "forged")
    assert await clean.fetch("west", "SELECT 1 FROM checkin_scan WHERE booking_id = $1 "
                             "AND outcome = 'admitted'", booking) == []


async def test_offline_the_gate_admits_by_signature_and_reports_a_double_entry(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any, scanner: Any,
        shots: Shots) -> None:
    show, confirmed = await sold(clean, http, catalog, "cam-cat", 0)
    booking = confirmed["booking_id"]
    theatre = theatre_of(catalog, show)
    png = await ticket_png(http, clean.node("west"), booking, "cam-cat")
    # The ticket goes in at an online gate; this gate, without its link, does not know.
    status, body = await scan(http, clean.node("west"), confirmed["ticket"]["payload"],
                              {"Authorization": f"Bearer {scanner_token(theatre, 'gate-8')}"},
                              "door-y")
    assert (status, body["outcome"]) == (200, "admitted"), body
    page = await scanner(f"{clean.node('west')}/scan", png, scanner_token(theatre), "door-x",
                         offline=True)
    offline = await verdict(page, "admit")
    assert offline["offline"] == "true" and offline["code"] == "admitted", offline
    assert "signature" in offline["reason"], offline
    assert await page.inner_text("#queued") == "1"
    assert await page.get_attribute("#link-state", "data-link") == "offline"
    await shots.take(page, "offline-admitted")
    # Back online: the queue is uploaded; the batch's double entry is shown, both gates.
    await page.context.set_offline(False)
    summary, line = await batch_reported(page)
    assert booking in line and "door-y" in line and "door-x" in line, line
    assert "1 entered twice" in summary, summary
    assert await page.inner_text("#queued") == "0"
    await shots.take(page, "batch-reported")
    rows = await clean.fetch("west", "SELECT outcome, gate FROM checkin_scan "
                             "WHERE booking_id = $1 ORDER BY id", booking)
    assert [(r["outcome"], r["gate"]) for r in rows] == [("admitted", "door-y"),
                                                         ("entered_twice", "door-x")]
