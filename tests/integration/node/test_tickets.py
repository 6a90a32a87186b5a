"""Tickets: drawn on their first download, stored once in the home PostgreSQL, then served
stored; two first downloads at once store one picture and both get its bytes."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import zxingcpp
from PIL import Image

from bookcluster.booking.signing import ticket_reference, verify_ticket_reference
from bookcluster.booking.ticket_keys import KeyRing, verify
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_holds import confirm, hold
from tests.integration.support import Session, bearer


async def sold(clean: Cluster, http: aiohttp.ClientSession, catalog: Any, user: str,
               index: int) -> str:
    """A booking of `user` confirmed at its home (west), not yet downloaded."""
    show = shows_in(clean, catalog, "west")[index]
    status, held = await hold(http, clean.node("west"), show, user, seats_of(catalog, show, 2))
    assert status == 201, held
    status, body = await confirm(http, clean.node("west"), held["booking_id"], f"k-{user}",
                                 f"p-{user}")
    assert status == 200, body
    return str(held["booking_id"])


async def download(http: aiohttp.ClientSession, node: str, booking: str,
                   user: str) -> tuple[int, str, bytes]:
    async with http.get(f"{node}/booking/booking/{booking}/ticket",
                        headers=bearer(user)) as resp:
        return resp.status, resp.content_type, await resp.read()


async def stored(clean: Cluster, booking: str) -> list[Any]:
    return await clean.fetch("west", "SELECT reference, png FROM ticket WHERE booking_id = $1",
                             booking)


def scanned(png: bytes) -> list[str]:
    image = Image.open(io.BytesIO(png))
    image.load()  # checks every chunk's CRC
    assert image.format == "PNG" and image.width > 300
    return [code.text for code in zxingcpp.read_barcodes(image)]


def signed_booking(payload: str) -> str:
    """The booking of a signed ticket, verified with the cluster's public keys."""
    assert Session.topology is not None
    ring = KeyRing(list(Session.topology.regions),
                   Session.topology.secrets.get("ticket_signing_key"))
    return verify(payload, ring.verifying()).booking_id


async def test_first_download_draws_and_stores_the_ticket(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    booking = await sold(clean, http, catalog, "tara", 0)
    # A confirm leaves no picture behind: the first download draws it.
    assert await stored(clean, booking) == []
    status, kind, png = await download(http, clean.node("south"), booking, "tara")
    assert (status, kind) == (200, "image/png")
    assert Session.topology is not None
    reference = ticket_reference(Session.topology.secrets.get("ticket_secret"), booking)
    # The QR holds the signed ticket; the printed (and stored) reference stays the HMAC one.
    [payload] = scanned(png)
    assert signed_booking(payload) == booking
    assert verify_ticket_reference(Session.topology.secrets.get("ticket_secret"),
                                   reference) == booking
    [row] = await stored(clean, booking)
    assert row["reference"] == reference and bytes(row["png"]) == png
    # Later downloads, on any node, are the stored bytes.
    for node in (clean.node("west"), clean.node("north")):
        assert await download(http, node, booking, "tara") == (200, "image/png", png)
    assert len(await stored(clean, booking)) == 1
    # Another user's ticket is not revealed; the owner's unconfirmed one is refused.
    status, _, _ = await download(http, clean.node("west"), booking, "omar")
    assert status == 404


async def test_first_downloads_at_once_store_one_ticket(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    booking = await sold(clean, http, catalog, "uma", 1)
    nodes = clean.nodes()
    answers = await asyncio.gather(*(download(http, nodes[i % len(nodes)], booking, "uma")
                                     for i in range(12)))
    assert {(status, kind) for status, kind, _ in answers} == {(200, "image/png")}
    [row] = await stored(clean, booking)
    assert {png for _, _, png in answers} == {bytes(row["png"])}
    [payload] = scanned(bytes(row["png"]))
    assert signed_booking(payload) == booking


async def test_an_unconfirmed_booking_has_no_ticket(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "west")[2]
    _, held = await hold(http, clean.node("west"), show, "vik", seats_of(catalog, show, 1))
    async with http.get(f"{clean.node('west')}/booking/booking/{held['booking_id']}/ticket",
                        headers=bearer("vik")) as resp:
        assert resp.status == 409
        assert (await resp.json())["error"] == "booking_not_pending"
    assert await stored(clean, held["booking_id"]) == []
