"""A fake camera for Chromium: a picture (a ticket's PNG) as the .y4m file that
`--use-file-for-fake-video-capture` plays in a loop, a Chromium started with it, and the
door scanner page (`/scan`) opened and signed in there.

Chromium reads YUV4MPEG2 with 4:2:0 chroma ("C420jpeg"): per frame, after `FRAME\\n`,
the full-size luma plane, then the two half-size chroma planes.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
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


PHONE = {"width": 390, "height": 844}
READ_S = 30  # a 2-core box decoding frames while a cluster runs


class ScannerPages:
    """Scanner pages, each in a Chromium whose camera shows one PNG; closed together,
    with the JavaScript errors they saw."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.errors: list[str] = []
        self._stack = AsyncExitStack()
        self._count = 0

    async def __aenter__(self) -> ScannerPages:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def open(self, url: str, png: bytes, token: str, gate: str, *,
                   offline: bool = False) -> Any:
        self._count += 1
        capture = y4m_of_png(png, self.folder / f"camera-{self._count}.y4m")
        chromium = await self._stack.enter_async_context(camera_browser(capture))
        context = await chromium.new_context(viewport=PHONE, locale="en-US",
                                             timezone_id="Europe/London")
        page = await context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        await page.goto(url)
        if offline:  # signed in without a link, once the page has kept the ticket keys
            await page.wait_for_function(
                "Object.keys((JSON.parse(localStorage.getItem('bookcluster.gate.keys'))"
                " || {keys: {}}).keys).length > 0")
            await context.set_offline(True)
        await page.fill("#token", token)
        await page.fill("#gate", gate)
        await page.click("#token-form button[type=submit]")
        await page.wait_for_selector("#scanner:not([hidden])")
        return page


async def verdict(page: Any, state: str) -> dict[str, str]:
    """What the page shows once its verdict is `state` (admit, refuse)."""
    await page.wait_for_selector(f"#verdict[data-verdict={state}]", timeout=READ_S * 1000)
    return {"word": await page.inner_text("#verdict-word"),
            "seats": await page.inner_text("#verdict-seats"),
            "reason": await page.inner_text("#verdict-reason"),
            "code": str(await page.get_attribute("#verdict", "data-code")),
            "offline": str(await page.get_attribute("#verdict", "data-offline"))}


async def batch_reported(page: Any) -> tuple[str, str]:
    """The last upload's summary and its double entries, once it lists one."""
    await page.wait_for_selector("#batch:not([hidden]) .twice-line", timeout=READ_S * 1000)
    return await page.inner_text("#batch-summary"), await page.inner_text("#batch-twice")
