"""A gate cut off by the WAN proxy: its node (north) cannot reach the show's home region
(south). The scanner page keeps admitting by signature alone, queues the scan, and when
the link is back uploads it; the ticket, admitted meanwhile at a south gate, is reported
as entered twice with both scans and gates. A cluster of its own (two regions, one node
each, every cross-region link through the proxy): slow, since the session cluster has
no WAN proxy to cut. The short version of the same gate is test_scanner_page's offline
test (the browser offline) with test_checkin's batch."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import aiohttp
import pytest

from bookcluster.node.auth import mint
from bookcluster.ops.demo_catalog import CITIES, CatalogSpec, build_catalog, slug
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_checkin import scan, theatre_of
from tests.integration.node.test_holds import confirm, hold
from tests.integration.own_cluster import own_cluster
from tests.integration.support import bearer, call
from tests.integration.web.camera import ScannerPages, batch_reported, verdict
from tests.integration.web.conftest import Shots, _missing

SPEC = CatalogSpec(theatres_per_city=1, cities_per_region=1, days=1, shows_per_day=1)
# Seeded shows are today: check-in open all day.
SETTINGS = "  checkin_opens_before: 48h\n  checkin_closes_after: 48h\n"


async def links(http: aiohttp.ClientSession, proxy: str, mode: str) -> None:
    """Every cross-region link of the proxy to `mode` (reset: cut; normal: healed)."""
    status, body = await call(http, "POST", f"{proxy}/links", anonymous=True,
                              json={"mode": mode})
    assert status == 200 and {link["mode"] for link in body} == {mode}, body


@pytest.mark.slow
async def test_a_gate_cut_off_admits_by_signature_and_reports_the_double_entry(
        tmp_path: Path, shots: Shots) -> None:
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    theatres = {f"{slug(CITIES[r][0][0])}-01": r for r in ("north", "south")}
    async with (own_cluster("bookcluster-gate-wan-", SPEC, regions=("north", "south"),
                            nodes=1, workers=True, theatres=theatres, extra_settings=SETTINGS,
                            wan_delay_ms=5) as cluster,
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
                ScannerPages(tmp_path) as pages):
        catalog = build_catalog(SPEC, date.today())
        show = shows_in(cluster, catalog, "south")[0]
        south = cluster.node("south")
        status, held = await hold(http, south, show, "gina", seats_of(catalog, show, 2))
        assert status == 201, held
        status, sold = await confirm(http, south, held["booking_id"], "k-gina", "p-gina")
        assert status == 200, sold
        booking, payload = sold["booking_id"], sold["ticket"]["payload"]
        async with http.get(f"{south}/booking/booking/{booking}/ticket",
                            headers=bearer("gina")) as resp:
            assert resp.status == 200, await resp.text()
            png = await resp.read()
        theatre = theatre_of(catalog, show)
        assert cluster.placement.region_of(theatre) == "south"

        def token(user: str) -> str:
            return mint(cluster.topology, user, 600, ("scanner",), (theatre,))

        # The ticket goes in at a south gate, online.
        status, body = await scan(http, south, payload,
                                  {"Authorization": f"Bearer {token('gate-s')}"}, "south-door")
        assert (status, body["outcome"]) == (200, "admitted"), body
        # North is cut off from south; its gate's scans get no answer from home.
        proxy = cluster.launcher.child("wan.proxy").spec.address
        await links(http, proxy, "reset")
        try:
            page = await pages.open(f"{cluster.node('north')}/scan", png, token("gate-n"),
                                    "north-door")
            offline = await verdict(page, "admit")
            assert (offline["code"], offline["offline"]) == ("admitted", "true"), offline
            assert "signature" in offline["reason"], offline
            assert await page.get_attribute("#link-state", "data-link") == "offline"
            assert await page.inner_text("#queued") == "1"
            await shots.take(page, "cut-off-admitted")
        finally:
            await links(http, proxy, "normal")
        # The link is back: the queued scan is uploaded; both entries are reported.
        summary, twice = await batch_reported(page)
        assert "1 entered twice" in summary, summary
        assert booking in twice and "south-door" in twice and "north-door" in twice, twice
        assert await page.inner_text("#queued") == "0"
        await shots.take(page, "batch-reported")
        rows = await cluster.fetch("south", "SELECT outcome, gate, offline FROM checkin_scan "
                                   "WHERE booking_id = $1 ORDER BY id", booking)
        assert [(r["outcome"], r["gate"], r["offline"]) for r in rows] == [
            ("admitted", "south-door", False), ("entered_twice", "north-door", True)]
    assert not pages.errors, f"JavaScript errors: {pages.errors}"
