"""The operator page in a real browser: a SIGSTOPped Redis master shows as down; a
Redis and a PostgreSQL switchover show under recent failovers, and the page and
`bookcluster status` label each store by what it is after them; the page fits a phone."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import pytest

from bookcluster.local import faults
from bookcluster.ops import status
from bookcluster.stores import patroni_api, sentinel_api
from bookcluster.topology.model import Endpoint
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import shows_in
from tests.integration.support import bearer, call
from tests.integration.web.conftest import Shots
from tests.integration.web.test_booking_page import create_onsale


@contextmanager
def paused(cluster: Cluster, name: str) -> Iterator[None]:
    with faults.paused(cluster.launcher.child(name).pid):
        yield


def process(name: str) -> str:
    return f"[data-process='{name}']"


async def test_operator_page_shows_a_stopped_master_as_down(cluster: Cluster, browser: Any,
                                                           shots: Shots) -> None:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    try:
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{cluster.node('north')}/ops")
        await page.click("#dev-sign-in")
        await page.wait_for_selector(f"{process('south.redis.master')}[data-up=true]")
        assert await page.inner_text("#epoch") == str(cluster.topology.epoch)
        assert "Not available" not in await page.inner_text("#failovers")
        assert "Not available" not in await page.inner_text("#moves")
        for region in cluster.topology.regions:
            assert await page.is_visible(f"[data-queue='{region}']")
        standby = await page.inner_text(f"{process('north.postgres.standby')} td:last-child")
        assert standby.endswith(" B")  # its lag in bytes behind the primary
        await shots.take(page, "healthy")
        with paused(cluster, "south.redis.master"):
            await page.wait_for_selector(f"{process('south.redis.master')}[data-up=false]",
                                         timeout=15000)
            cell = await page.inner_text(f"{process('south.redis.master')} .state")
            assert cell == "down"
            # Its nodes say why they are not ready; other regions are untouched.
            await page.wait_for_selector(f"{process('south.node.1')} .state:has-text('not ready')",
                                         timeout=15000)
            assert await page.get_attribute(process("north.redis.master"), "data-up") == "true"
            await shots.take(page, "south-master-stopped")
        await page.wait_for_selector(f"{process('south.redis.master')}[data-up=true]",
                                     timeout=15000)
    finally:
        await context.close()
    assert not errors, f"JavaScript errors: {errors}"


async def test_operator_page_lists_recent_failovers(cluster: Cluster, browser: Any,
                                                   shots: Shots,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """West's Redis master switched over by Sentinel and north's PostgreSQL leader by
    Patroni: both appear under "Recent failovers" (from the mirror reconciler's log and
    Patroni's history), and the region card names west's master now. Each store's row
    says what it is now (the standby's slot is the leader, the old master a replica),
    with the lag on the copy that lags; so does `bookcluster status`. Both are switched
    back afterwards: other tests expect the masters where the cluster started them."""
    topology = cluster.topology
    old, new = await sentinel_api.switchover(topology, "west")
    await patroni_api.switchover(topology.region("north"), topology.secrets)
    context = await browser.new_context(viewport={"width": 1400, "height": 1000},
                                        timezone_id="America/New_York")
    errors: list[str] = []
    try:
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{cluster.node('south')}/ops")
        await page.click("#dev-sign-in")
        redis_row = f"#failovers tr:has-text('Redis master is now {new} (was {old})')"
        await page.wait_for_selector(redis_row, timeout=20000)
        assert "west" in await page.inner_text(redis_row)
        assert "IST" in await page.inner_text(redis_row)
        pg_row = "#failovers tr:has-text('PostgreSQL leader is now north-2')"
        await page.wait_for_selector(pg_row, timeout=20000)
        assert "timeline" in await page.inner_text(pg_row)
        await page.wait_for_selector(f"[data-region=west] [data-master-now='{new}']",
                                     timeout=10000)
        # Labels by what each is now, not by the topology's slot.
        leader = f"{process('north.postgres.standby')}[data-now=leader]"
        await page.wait_for_selector(leader, timeout=30000)
        assert "PostgreSQL leader" in await page.inner_text(f"{leader} th")
        standby = f"{process('north.postgres.primary')}[data-now=sync_standby]"
        await page.wait_for_selector(standby, timeout=30000)
        assert "PostgreSQL sync standby" in await page.inner_text(f"{standby} th")
        assert (await page.inner_text(f"{standby} td:last-child")).endswith(" B")
        assert await page.inner_text(f"{leader} td:last-child") == "–"
        promoted = f"[data-region=west] tr[data-now=master]:has-text('{new}')"
        await page.wait_for_selector(promoted, timeout=10000)
        assert "Redis master" in await page.inner_text(f"{promoted} th")
        demoted = f"{process('west.redis.master')}[data-now=replica]"
        await page.wait_for_selector(demoted, timeout=30000)
        assert "Redis replica of west" in await page.inner_text(f"{demoted} th")
        assert "restarted" not in await page.inner_text("#failovers")
        await shots.take(page, "failovers")
        await status_says_what_each_store_is(cluster, str(old), str(new), capsys)
    finally:
        await context.close()
        await switch_back(cluster, old)
    assert not errors, f"JavaScript errors: {errors}"


async def status_says_what_each_store_is(cluster: Cluster, old: str, new: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """`bookcluster status` after the switchovers: NOW is what Patroni and Sentinel say,
    the table fits 100 columns in region order and says no timeline."""
    topology = cluster.topology
    capsys.readouterr()
    await status.status_command(topology, True, None, alive=lambda pid: True)
    rows = {f"{r['host']}:{r['port']}": r
            for r in json.loads(capsys.readouterr().out)["processes"]}
    north = topology.region("north")
    assert rows[str(north.pg_standby)]["now"] == "pg leader"
    assert rows[str(north.pg_primary)]["now"] in ("pg sync standby", "pg replica")
    assert rows[new]["now"] == "redis master (west)"
    assert rows[old]["now"] == "redis replica (west)"
    await status.status_command(topology, False, None, alive=lambda pid: True)
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 100 and "timeline" not in "\n".join(lines)
    table = lines[2:lines.index("")]  # Sentinel's masters follow, one line a region
    order = [line.split()[0].split(".")[0] for line in table
             if ".postgres." in line or ".redis." in line]
    assert order == sorted(order, key=list(topology.regions).index)


async def test_operator_page_fits_a_phone(cluster: Cluster, browser: Any, shots: Shots) -> None:
    """At 390 px the page never scrolls sideways: the region cards fit the width and a
    wider table scrolls inside itself."""
    context = await browser.new_context(viewport={"width": 390, "height": 844},
                                        device_scale_factor=2, is_mobile=True, has_touch=True)
    errors: list[str] = []
    try:
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{cluster.node('north')}/ops")
        await page.click("#dev-sign-in")
        await page.wait_for_selector(f"{process('west.worker')}[data-up=true]")
        await page.wait_for_selector("#failovers > div")
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide"
        widest = await page.evaluate(
            "Math.max(...[...document.querySelectorAll('.region')]"
            ".map((e) => e.getBoundingClientRect().right))")
        assert widest <= 390
        await shots.take(page, "phone")
    finally:
        await context.close()
    assert not errors, f"JavaScript errors: {errors}"


async def switch_back(cluster: Cluster, west_master: Endpoint) -> None:
    """West's Redis master and north's PostgreSQL leader where the cluster started them;
    each switchover is refused until the demoted server follows again (retried, 60 s)."""
    topology = cluster.topology
    north = topology.region("north")
    deadline = time.monotonic() + 60
    while await sentinel_api.master_of(topology, "west") != west_master:
        try:
            await sentinel_api.switchover(topology, "west")
        except sentinel_api.SentinelError:
            assert time.monotonic() < deadline, "west's Redis master did not switch back"
            await asyncio.sleep(1)
    while True:
        try:
            await patroni_api.switchover(north, topology.secrets, candidate="north-1")
            break
        except patroni_api.PatroniError:
            assert time.monotonic() < deadline, "north's PostgreSQL leader did not switch back"
            await asyncio.sleep(1)


async def test_operator_page_lists_on_sales_with_their_queue(
        onsales: Cluster, catalog: Any, browser: Any, http: aiohttp.ClientSession,
        shots: Shots) -> None:
    """An on-sale of a south show whose sale has started; three people join: the operator
    page (a north node) lists it with its home, joined and admitted counts and the rate."""
    cluster = onsales
    show = shows_in(cluster, catalog, "south")[0]
    onsale = await create_onsale(http, cluster.node("south"), [show], sale_in_s=0)
    for user in ("op-fan1", "op-fan2", "op-fan3"):
        status, body = await call(http, "POST", f"{cluster.node('west')}/onsales/{onsale}/join",
                                  headers=bearer(user))
        assert status == 200, body
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    try:
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{cluster.node('north')}/ops")
        await page.click("#dev-sign-in")
        row = f"#onsales [data-onsale='{onsale}']"
        await page.wait_for_selector(f"{row} [data-field=joined]:has-text('3')", timeout=15000)
        await page.wait_for_selector(f"{row} [data-field=admitted]:has-text('3')",
                                     timeout=15000)
        cells = await page.inner_text(row)
        assert "south" in cells and str(show) in cells and "IST" in cells
        assert (await page.inner_text(f"{row} [data-field=rate]")).endswith("/s")
        assert await page.inner_text(f"{row} [data-field=waiting]") == "0"
        # How long the three waited (p50 / p99) and that none abandoned (yet).
        assert re.fullmatch(r"\d+ s / \d+ s",
                            await page.inner_text(f"{row} [data-field=waited]"))
        assert await page.inner_text(f"{row} [data-field=abandoned]") == "0"
        await shots.take(page, "on-sales")
    finally:
        await context.close()
    assert not errors, f"JavaScript errors: {errors}"
