"""The ticket's picture: a QR code and a few lines of text, as a grayscale PNG.

A node renders one on a ticket's first download (`tickets.py`), so it has to be
cheap: 1.4 ms of CPU, against
11.0 ms for `qrcode` + Pillow's `ImageDraw.text` + `Image.save` of the same
picture (one process; `loadtests/worker_drain.py --render 1000` times ours).
Where the time went and what replaced it:

- QR (4.9 -> 0.7 ms): `segno`, with a fixed mask pattern. Choosing the mask of
  eight with the lowest penalty is most of any pure-Python encoder's time
  (2.7 ms in segno, 3.9 ms in qrcode). A scanner reads the mask from the
  symbol's format bits, so any of the eight decodes the same; the penalty only
  steers away from finder-like patterns, and our payload (random hex and an
  HMAC) is as close to random data as a payload gets: every mask scores alike.
- Text (1.6 -> 0.3 ms): Pillow rasterises every glyph of every line anew.
  Glyphs are rendered once per process and pasted: the same pixels, since
  Pillow's default font uses its basic layout (no shaping, no kerning).
- PNG (3.4 -> 0.4 ms): one 8-bit gray IDAT written with `zlib` at level 1
  instead of Pillow's RGB encoder with adaptive filters at level 6: 5.5 KB
  instead of 10.8 KB.

The text went from Pillow's 10 px default to 16 px (people read it) with the ₹
drawn by hand: no CPU change that measures (2.0-2.1 ms a whole ticket either way on
the shared 2-core box, timeit medians, alternated), 8.4 instead of 5.5 KB of PNG.
"""

from __future__ import annotations

import struct
import zlib
from functools import lru_cache

import segno
from PIL import Image, ImageDraw, ImageFont

MODULE_PX = 6  # pixels per QR module
QUIET_MODULES = 2  # light border around the symbol, in modules
TEXT_WIDTH = 520  # at least; wider for a longer line (a party's many seats)
LINE_PX = 28
QR_ERROR = "m"  # 15 % of the symbol may be damaged
QR_MASK = 0  # fixed: see the module docstring
PNG_LEVEL = 1
WHITE, BLACK = 255, 0

# Pillow's own font (Aileron, FreeType), so a fresh machine needs no font installed.
FONT_PX = 16
FONT = ImageFont.load_default(size=FONT_PX)
RUPEE = "\u20b9"  # Aileron has no ₹: drawn here (`_rupee`)
SUPERSAMPLE = 4  # ₹ is drawn this many times larger, then scaled down (smooth edges)
_MODULE_TO_GRAY = bytes([WHITE, BLACK] + [WHITE] * 254)  # segno: 1 = dark, 0 = light


def qr_modules(payload: str) -> tuple[int, bytes]:
    """(side, pixels): the symbol without border, one byte per module, dark = BLACK."""
    matrix = segno.make_qr(payload, error=QR_ERROR, boost_error=False, mask=QR_MASK).matrix
    return len(matrix), b"".join(matrix).translate(_MODULE_TO_GRAY)



def _rupee() -> tuple[Image.Image, int, float]:
    """The Indian rupee sign, as tall as the font's figures: two bars, the bowl that
    hangs from the upper one and closes at the lower, and the leg to the baseline."""
    _, top, width, bottom = (int(v) for v in FONT.getbbox("0"))
    k = SUPERSAMPLE
    w, h, stroke = (width - 1) * k, (bottom - top) * k, max(k, round(FONT_PX * k / 12))
    big = Image.new("L", (w + stroke, bottom * k + stroke), 0)
    pen = ImageDraw.Draw(big)
    y0, bar2, bowl = top * k, top * k + h * 3 // 10, top * k + h * 11 // 20
    pen.line([(0, y0), (w, y0)], fill=255, width=stroke)
    pen.line([(0, bar2), (w, bar2)], fill=255, width=stroke)
    pen.arc([(-w * 2 // 5, y0), (w * 7 // 10, bowl)], -90, 90, fill=255, width=stroke)
    pen.line([(0, bowl - stroke // 2), (w * 3 // 10, bowl - stroke // 2)], fill=255,
             width=stroke)
    pen.line([(w // 10, bowl), (w * 4 // 5, bottom * k)], fill=255, width=stroke + k // 2)
    mask = big.resize((big.width // k, big.height // k), Image.Resampling.BOX)
    return mask, 0, float(width)


@lru_cache(maxsize=512)
def _glyph(char: str) -> tuple[Image.Image, int, float]:
    """(mask, x offset, advance) of one character, rendered once."""
    if char == RUPEE:
        return _rupee()
    left, _, right, bottom = FONT.getbbox(char)  # from the pen at the line's top left
    offset = min(0, int(left))  # a glyph may reach left of its origin
    mask = Image.new("L", (max(1, int(right) - offset + 1), max(1, int(bottom) + 1)), 0)
    ImageDraw.Draw(mask).text((-offset, 0), char, fill=255, font=FONT)
    return mask, offset, FONT.getlength(char)


def draw_text(image: Image.Image, x: int, y: int, text: str) -> None:
    """What `ImageDraw.text` draws in black with our font, pixel for pixel, from cached
    glyphs (and ₹, which the font lacks, drawn by `_rupee`)."""
    pen = float(x)
    for char in text:
        mask, offset, advance = _glyph(char)
        image.paste(BLACK, (round(pen) + offset, y), mask)
        pen += advance


def text_width(text: str) -> int:
    """How wide `draw_text` draws `text`, in pixels."""
    return round(sum(_glyph(char)[2] for char in text))


def render(payload: str, lines: list[str]) -> Image.Image:
    """The QR code of `payload` on the left, `lines` of text on its right."""
    side, modules = qr_modules(payload)
    symbol = Image.frombytes("L", (side, side), modules).resize(
        (side * MODULE_PX, side * MODULE_PX), Image.Resampling.NEAREST)
    qr_px = symbol.width + 2 * QUIET_MODULES * MODULE_PX
    text_px = max([TEXT_WIDTH] + [40 + text_width(line) for line in lines])
    image = Image.new("L", (qr_px + text_px, max(qr_px, 40 + LINE_PX * len(lines))), WHITE)
    image.paste(symbol, (QUIET_MODULES * MODULE_PX, QUIET_MODULES * MODULE_PX))
    for i, line in enumerate(lines):
        draw_text(image, qr_px + 20, 20 + LINE_PX * i, line)
    return image


def png(image: Image.Image) -> bytes:
    """An 8-bit grayscale image as PNG: every row unfiltered, one IDAT chunk."""
    if image.mode != "L":
        raise ValueError(f"png() writes mode L images, not {image.mode}")
    width, height = image.size
    pixels = image.tobytes()
    rows = b"".join(b"\0" + pixels[y * width:(y + 1) * width] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(rows, PNG_LEVEL)) + _chunk(b"IEND", b""))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
