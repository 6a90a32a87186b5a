"""Head counts at the door as metrics, from the home region only.

Per show whose check-in window is open and that sold a seat in this region: seats
`sold`, `admitted` (ever) and `inside` now, read from the region's PostgreSQL primary
(`bc_checkin_heads`) by the region's worker, the one process of a region that exports
them. A theatre's sales live only at its home, so every show has one series, labelled
with its home region; a show whose window closed (or that moved away) is dropped.
"""

from __future__ import annotations

from prometheus_client import Gauge

from bookcluster.booking import ledger
from bookcluster.errors import TransactionAborted
from bookcluster.loops import Loop
from bookcluster.seats.home import HomeRegion
from bookcluster.topology.errors import RegionUnavailable
from bookcluster.topology.model import Settings

HEADS_REFRESH_S = 2.0
COUNTS = ("sold", "admitted", "inside")


class HeadCounts:
    """The `bookcluster_show_heads` gauge of one region's shows; `run_once` refreshes it."""

    def __init__(self, home: HomeRegion, region: str, settings: Settings,
                 gauge: Gauge) -> None:
        self._home = home
        self._region = region
        self._settings = settings
        self._gauge = gauge
        self._shows: set[int] = set()

    async def run_once(self) -> None:
        """Read and export the counts."""
        async with self._home.connection(self._region) as conn:
            heads = await ledger.checkin_heads(conn, self._settings.checkin_opens_before_s,
                                               self._settings.checkin_closes_after_s)
        shows = set()
        for row in heads:
            shows.add(row["show_id"])
            for count in COUNTS:
                self._gauge.labels(self._region, str(row["show_id"]), count).set(row[count])
        for gone in self._shows - shows:
            for count in COUNTS:
                self._gauge.remove(self._region, str(gone), count)
        self._shows = shows

    def loop(self) -> Loop:
        return Loop("heads", self.run_once, HEADS_REFRESH_S,
                    expected=(RegionUnavailable, TransactionAborted))
