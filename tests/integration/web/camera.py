"""A fake camera for Chromium: a picture (a ticket's PNG) as the .y4m file that
`--use-file-for-fake-video-capture` plays in a loop, and a Chromium started with it.

Chromium reads YUV4MPEG2 with 4:2:0 chroma ("C420jpeg"): per frame, after `FRAME\\n`,
the full-size luma plane, then the two half-size chroma planes.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from PIL import Image

from tests.integration.web.conftest import CHROMIUM, CHROMIUM_ARGS

FRAME = (1280, 720)
FAKE_CAMERA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


def y4m_of_png(png: bytes, path: Path, size: tuple[int, int] = FRAME, frames: int = 2) -> Path:
    """`png` centred on a white frame of `size` (scaled down only if larger), as .y4m."""
    picture = Image.open(io.BytesIO(png)).convert("RGB")
    picture.thumbnail(size)
    frame = Image.new("RGB", size, "white")
    frame.paste(picture, ((size[0] - picture.width) // 2, (size[1] - picture.height) // 2))
    luma, blue, red = frame.convert("YCbCr").split()
    half = (size[0] // 2, size[1] // 2)
    planes = luma.tobytes() + blue.resize(half).tobytes() + red.resize(half).tobytes()
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{size[0]} H{size[1]} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + planes)
    return path


@asynccontextmanager
async def camera_browser(capture: Path) -> AsyncIterator[Any]:
    """A Chromium of its own whose camera shows `capture` (the session's browser has none)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as driver:
        chromium = await driver.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[*CHROMIUM_ARGS, *FAKE_CAMERA_ARGS,
                  f"--use-file-for-fake-video-capture={capture}"])
        try:
            yield chromium
        finally:
            await chromium.close()
