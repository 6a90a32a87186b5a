"""Browser tests: Debian's chromium driven by Playwright (executable_path; Playwright's
own browser download is never used). `scripts/test` installs chromium first
(`scripts/browser-setup`); without it every test here skips and says why.

Screenshots go to `.artefacts/web/` (or `$BOOKCLUSTER_ARTEFACTS/web/`), named
after the test and step; the folder is printed at the end of the run. The
documentation's screenshots (`docs/screens/`) are taken by the tests that reach each
view and written there only with `BOOKCLUSTER_DOC_SCREENS=1`, so an ordinary run
leaves the tree as it was.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

CHROMIUM = Path(os.environ.get("BOOKCLUSTER_CHROMIUM", "/usr/bin/chromium"))
# As this machine's probe starts it: no sandbox as root, and none of chromium's own
# network chatter (a closed network refuses it, many connections at a time).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
ARTEFACTS = Path(os.environ.get("BOOKCLUSTER_ARTEFACTS",
                                Path(__file__).resolve().parents[3] / ".artefacts")) / "web"
DOC_SCREENS = Path(__file__).resolve().parents[3] / "docs" / "screens"
_used: list[Path] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _used:
        terminalreporter.write_line(f"browser screenshots: {_used[0]}")


def _missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError as exc:
        return f"playwright is not installed ({exc}); run scripts/bootstrap"
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        found = shutil.which("chromium")
        hint = f" (one is on PATH at {found}: set BOOKCLUSTER_CHROMIUM)" if found else ""
        return (f"no chromium at {CHROMIUM}{hint}: scripts/browser-setup installs Debian's "
                "(scripts/test runs it)")
    return None


@pytest_asyncio.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as driver:
        chromium = await driver.chromium.launch(executable_path=str(CHROMIUM),
                                                args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


class Shots:
    """Screenshots of one test, numbered in the order taken."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    async def take(self, page: Any, step: str, *, full_page: bool = True) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{step}.png"
        await page.screenshot(path=str(path), full_page=full_page)
        return path


async def docs_shot(page: Any, name: str) -> Path:
    """The window as it is now, as `docs/screens/<name>.png` (see above)."""
    folder = (DOC_SCREENS if os.environ.get("BOOKCLUSTER_DOC_SCREENS") == "1"
              else ARTEFACTS / "docs-screens")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    await page.screenshot(path=str(path))
    return path


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Shots:
    folder = ARTEFACTS / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if not _used:
        _used.append(ARTEFACTS)
    return Shots(folder)


@pytest_asyncio.fixture
async def onsales(clean: Any) -> AsyncIterator[Any]:
    """The clean session cluster; afterwards its on-sales dropped (PostgreSQL and the
    masters' copies) and every node's guard cache outlived, so later tests hold freely."""
    from bookcluster.booking.onsales import GUARD_REFRESH_S
    from bookcluster.ops.reset import reset_cluster

    yield clean
    await reset_cluster(clean.topology)
    await asyncio.sleep(GUARD_REFRESH_S + 0.5)
