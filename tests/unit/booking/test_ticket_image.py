"""The ticket picture: its QR code reads back as the signed reference, its PNG is lossless."""

from __future__ import annotations

import io
import secrets

import pytest
import zxingcpp
from PIL import Image, ImageDraw, ImageOps

from bookcluster.booking.signing import ticket_reference, verify_ticket_reference
from bookcluster.booking.ticket_image import (
    FONT,
    RUPEE,
    TEXT_WIDTH,
    draw_text,
    png,
    render,
    text_width,
)

LINES = ["Jawan (Hindi, UA)", "Tue 24 Nov 2026, 6:30 pm IST", "PVR Forum, Bengaluru - Audi 2",
         "Seats: A1, A2, A3, A4, A5, A6, A7, A8, A9, A10", "Paid: ₹2,500.00"]


def scanned(data: bytes) -> list[str]:
    image = Image.open(io.BytesIO(data))
    image.load()  # Pillow checks each chunk's CRC while reading
    assert image.format == "PNG"
    return [code.text for code in zxingcpp.read_barcodes(image)]


def test_qr_reads_back_as_the_signed_reference() -> None:
    secret = secrets.token_urlsafe(32)
    for _ in range(50):  # references are random: many masks' worth of patterns
        booking = f"b{secrets.randbelow(10**7)}-{secrets.token_hex(8)}"
        reference = ticket_reference(secret, booking)
        [read] = scanned(png(render(reference, [*LINES, f"Ref: {reference}"])))
        assert read == reference and verify_ticket_reference(secret, read) == booking


def test_qr_survives_a_coarse_scan() -> None:
    """At a third of its size (2 px per module) the code still reads: what a phone at
    arm's length sees of a printed ticket."""
    reference = ticket_reference("k", "b42-0123456789abcdef")
    image = render(reference, LINES)
    small = image.resize((image.width // 3, image.height // 3))
    assert [c.text for c in zxingcpp.read_barcodes(small)] == [reference]


def test_png_is_the_rendered_picture_pixel_for_pixel() -> None:
    image = render(ticket_reference("k", "b7-00000000000000ff"), LINES)
    decoded = Image.open(io.BytesIO(png(image)))
    assert decoded.mode == "L" and decoded.size == image.size
    assert decoded.tobytes() == image.tobytes()
    assert image.getextrema() == (0, 255)  # black text and modules on white


def test_text_is_drawn_right_of_the_code() -> None:
    with_text = render("b1-00", LINES)
    without = render("b1-00", [""] * len(LINES))
    qr_px = with_text.width - TEXT_WIDTH
    text_area = (qr_px, 0, with_text.width, with_text.height)
    assert with_text.crop(text_area).getextrema()[0] < 128  # ink where the lines go
    assert without.crop(text_area).getextrema() == (255, 255)
    assert with_text.crop((0, 0, qr_px, with_text.height)).tobytes() == \
        without.crop((0, 0, qr_px, without.height)).tobytes()


def test_cached_glyphs_draw_what_pillow_draws() -> None:
    lines = [line.replace(RUPEE, "") for line in LINES]  # ₹: ours, below
    lines += ["gjpqy WMW ,;_|/\\ ~`'\"", "".join(map(chr, range(32, 127)))]
    ours = Image.new("L", (900, 40 * len(lines)), 255)
    pillows = ours.copy()
    for i, line in enumerate(lines):
        draw_text(ours, 10, 5 + 40 * i, line)
        ImageDraw.Draw(pillows).text((10, 5 + 40 * i), line, fill=0, font=FONT)
    assert ours.tobytes() == pillows.tobytes()
    assert ours.getextrema()[0] < 64  # there is ink to compare


def test_the_rupee_sign_is_drawn_where_the_font_has_none() -> None:
    """Pillow's font draws a missing-glyph box for ₹; ours draws the sign: ink of its
    own shape, as tall as the figures, no wider than a figure's advance."""
    ours = Image.new("L", (60, 40), 255)
    pillows = ours.copy()
    draw_text(ours, 10, 5, RUPEE)
    ImageDraw.Draw(pillows).text((10, 5), RUPEE, fill=0, font=FONT)
    assert ours.tobytes() != pillows.tobytes()
    ink = ImageOps.invert(ours).getbbox()
    figure = ImageOps.invert(render_text("0")).getbbox()
    assert ink is not None and figure is not None
    # Top and baseline those of a figure, give or take the pen's smoothed edge.
    assert abs(ink[1] - figure[1] - 5) <= 1 and abs(ink[3] - figure[3] - 5) <= 1
    assert ink[2] - ink[0] <= FONT.getlength("0")
    assert text_width(f"{RUPEE}1") == round(2 * FONT.getlength("0"))


def render_text(text: str) -> Image.Image:
    image = Image.new("L", (60, 40), 255)
    draw_text(image, 10, 0, text)
    return image


def test_png_refuses_other_modes() -> None:
    with pytest.raises(ValueError, match="mode L"):
        png(Image.new("RGB", (4, 4)))
