"""Signed tickets (`booking/ticket_keys.py`): verified offline with public keys alone."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime

import pytest
import zxingcpp
from PIL import Image

from bookcluster.booking import ticket_keys
from bookcluster.booking.ticket_keys import KeyRing, TicketInvalid, sign, verify
from bookcluster.booking.tickets import draw, ticket_lines
from bookcluster.catalog import ShowInfo, TheatreInfo

REGIONS = ("north", "south", "west")
SECRET = "x" * 43
BOOKING = "b1001-0123456789abcdef"


def ticket(ring: KeyRing, region: str = "south", seats: tuple[str, ...] = ("A1", "A2")) -> str:
    return sign(ring.signing(region), BOOKING, 1001, "s-1", seats, 1_790_000_000)


def reencoded(payload: str, change: dict[str, object]) -> str:
    """The payload with its body changed and the old signature kept."""
    prefix, body, signature = payload.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(change)
    raw = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{prefix}.{raw}.{signature}"


def test_a_ticket_verifies_with_the_published_keys_alone() -> None:
    ring = KeyRing(REGIONS, SECRET)
    payload = ticket(ring)
    # What a gate holds: the public half, as `GET /tickets/keys` publishes it.
    keys = ticket_keys.public_keys(json.loads(json.dumps(ring.published())))
    claims = verify(payload, keys)
    assert claims.booking_id == BOOKING and claims.show_id == 1001
    assert claims.seat_ids == ("A1", "A2") and claims.screen_id == "s-1"
    assert claims.key_id == ring.signing("south").kid and claims.key_id.startswith("south-")
    assert claims.ticket_id == ticket_keys.ticket_id(BOOKING)
    # Deterministic: the same ticket is the same text (answer, image, replay).
    assert ticket(ring) == payload


def test_an_altered_seat_is_refused() -> None:
    ring = KeyRing(REGIONS, SECRET)
    altered = reencoded(ticket(ring), {"t": ["A1", "A3"]})
    with pytest.raises(TicketInvalid) as refused:
        verify(altered, ring.verifying())
    assert refused.value.code == "bad_signature"


def test_a_forged_ticket_is_refused() -> None:
    ring = KeyRing(REGIONS, SECRET)
    forger = KeyRing(REGIONS, "another secret entirely")
    # Signed with another key under our key id.
    forged = sign(forger.signing("south"), BOOKING, 1001, "s-1", ["A1"], 1_790_000_000)
    forged = reencoded(forged, {"k": ring.signing("south").kid})
    with pytest.raises(TicketInvalid) as refused:
        verify(forged, ring.verifying())
    assert refused.value.code == "bad_signature"
    for garbage in ("", "BC1.", "BC1.abc.def", "BC2.e30.AAAA", "BC1.e30.AAAA", "x" * 2000):
        with pytest.raises(TicketInvalid) as refused:
            verify(garbage, ring.verifying())
        assert refused.value.code in ("malformed_ticket", "unknown_key")


def test_a_wrong_or_unknown_key_is_refused() -> None:
    ring = KeyRing(REGIONS, SECRET)
    payload = ticket(ring, "south")
    north = ring.signing("north").kid
    # Another region's key id on a south-signed ticket: the wrong key, refused.
    with pytest.raises(TicketInvalid) as refused:
        verify(reencoded(payload, {"k": north}), ring.verifying())
    assert refused.value.code == "bad_signature"
    # A key rotated out (its secret no longer current or previous) is unknown.
    rotated = KeyRing(REGIONS, "a new secret for the ring")
    with pytest.raises(TicketInvalid) as refused:
        verify(payload, rotated.verifying())
    assert refused.value.code == "unknown_key"
    # Kept as the previous secret, its keys still verify, and are listed as not current.
    kept = KeyRing(REGIONS, "a new secret for the ring", previous=SECRET)
    assert verify(payload, kept.verifying()).booking_id == BOOKING
    listed = {k["key_id"]: k["current"] for k in kept.published()["keys"]}
    assert listed[ring.signing("south").kid] is False
    assert listed[kept.signing("south").kid] is True and len(listed) == 6


def test_regions_sign_with_different_keys() -> None:
    ring = KeyRing(REGIONS, SECRET)
    assert len({ring.signing(r).kid for r in REGIONS}) == 3
    assert len({ring.signing(r).public_raw() for r in REGIONS}) == 3


def test_the_qr_of_the_ticket_image_is_the_signed_payload() -> None:
    ring = KeyRing(REGIONS, SECRET)
    payload = ticket(ring)
    theatre = TheatreInfo("t-blr-1", "PVR Forum", "Hosur Road", "Bengaluru", "Karnataka",
                          "south")
    show = ShowInfo(1001, "t-blr-1", "s-1", "Audi 2", "m-1", "Jawan", "Hindi", "UA", 169,
                    datetime(2026, 11, 24, 13, 0, tzinfo=UTC), "south")
    png = draw(payload, ticket_lines(show, theatre, ["A1", "A2"], 100, "ref"))
    [code] = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert verify(code.text, ring.verifying()).seat_ids == ("A1", "A2")
