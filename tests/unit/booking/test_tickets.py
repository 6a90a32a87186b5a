"""What a ticket says, drawn from the booking and the catalog alone (`booking/tickets.py`)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import zxingcpp
from PIL import Image

from bookcluster.booking.signing import ticket_reference, verify_ticket_reference
from bookcluster.booking.tickets import draw, ticket_lines
from bookcluster.catalog import ShowInfo, TheatreInfo

THEATRE = TheatreInfo("t-blr-1", "PVR Forum", "Hosur Road", "Bengaluru", "Karnataka", "south")
SHOW = ShowInfo(1001, "t-blr-1", "s-1", "Audi 2", "m-1", "Jawan", "Hindi", "UA", 169,
                datetime(2026, 11, 24, 13, 0, tzinfo=UTC), "south")


def test_lines_name_show_theatre_seats_amount_and_reference() -> None:
    reference = ticket_reference("k" * 16, "b1001-0123456789abcdef")
    lines = ticket_lines(SHOW, THEATRE, ["A1", "A2"], 45050, reference)
    assert lines[0] == "Jawan (UA, Hindi)"
    assert lines[1] == "PVR Forum, Bengaluru - Audi 2"
    assert lines[2] == SHOW.starts_at.astimezone().strftime("%a %d %b %Y %H:%M %Z")
    assert lines[3:] == ["Seats: A1, A2", "Paid: Rs 450.50", f"Ref: {reference}"]


def test_drawn_ticket_is_a_png_whose_qr_code_is_the_signed_reference() -> None:
    secret = "s" * 32
    reference = ticket_reference(secret, "b1001-0123456789abcdef")
    png = draw(reference, ticket_lines(SHOW, THEATRE, ["A1"], 20000, reference))
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG" and image.mode == "L"
    [code] = zxingcpp.read_barcodes(image)
    assert code.text == reference
    assert verify_ticket_reference(secret, code.text) == "b1001-0123456789abcdef"


def test_drawing_is_deterministic() -> None:
    """Two nodes drawing the same ticket at once make the same bytes."""
    reference = ticket_reference("k" * 16, "b7-00000000000000ff")
    lines = ticket_lines(SHOW, THEATRE, ["B3"], 100, reference)
    assert draw(reference, lines) == draw(reference, lines)
