"""What a ticket says, drawn from the booking and the catalog alone (`booking/tickets.py`)."""

from __future__ import annotations

import io
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import zxingcpp
from PIL import Image

from bookcluster.booking.signing import ticket_reference, verify_ticket_reference
from bookcluster.booking.tickets import draw, summary, ticket_lines
from bookcluster.catalog import ShowInfo, TheatreInfo

THEATRE = TheatreInfo("t-blr-1", "PVR Forum", "Hosur Road", "Bengaluru", "Karnataka", "south")
SHOW = ShowInfo(1001, "t-blr-1", "s-1", "Audi 2", "m-1", "Jawan", "Hindi", "UA", 169,
                datetime(2026, 11, 24, 13, 0, tzinfo=UTC), "south")


def test_lines_name_show_theatre_seats_amount_and_reference() -> None:
    reference = ticket_reference("k" * 16, "b1001-0123456789abcdef")
    lines = ticket_lines(SHOW, THEATRE, ["A1", "A2"], 4505050, reference)
    assert lines == ["Jawan (Hindi, UA)", "Tue 24 Nov 2026, 6:30 pm IST",
                     "PVR Forum, Bengaluru - Audi 2", "Seats: A1, A2", "Paid: ₹45,050.50",
                     f"Ref: {reference}"]


def test_the_time_is_the_theatres_whatever_the_machines_zone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A node whose own zone is UTC (or anything) prints the theatre's wall clock."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        assert ticket_lines(SHOW, THEATRE, ["A1"], 100, "r")[1] == "Tue 24 Nov 2026, 6:30 pm IST"
        london = replace(THEATRE, timezone="Europe/London")
        assert summary(SHOW, london, ["A1"], 100)[1] == ("When", "Tue 24 Nov 2026, 1:00 pm GMT")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


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
