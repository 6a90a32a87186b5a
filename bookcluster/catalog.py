"""The catalog as a node sees it: theatres, shows and seat layouts from its own
region's PostgreSQL, cached in memory (the catalog is read-mostly and every
region holds all of it). Routing a show to its home region needs only this.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg

from bookcluster.errors import NotFound
from bookcluster.stores.connections import Connections
from bookcluster.stores.errors import PG_UNAVAILABLE
from bookcluster.topology.errors import RegionUnavailable
from bookcluster.topology.placement import Placement


@dataclass(frozen=True)
class TheatreInfo:
    id: str
    name: str
    address: str
    city: str
    state: str
    region: str
    timezone: str = "Asia/Kolkata"  # IANA name: its shows' local times (`booking/formats.py`)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "address": self.address, "city": self.city,
                "state": self.state, "region": self.region, "timezone": self.timezone}


@dataclass(frozen=True)
class ShowInfo:
    id: int
    theatre_id: str
    screen_id: str
    screen_name: str
    movie_id: str
    movie_title: str
    language: str
    certificate: str
    duration_min: int
    starts_at: datetime
    region: str

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "theatre_id": self.theatre_id, "region": self.region,
                "screen": {"id": self.screen_id, "name": self.screen_name},
                "movie": {"id": self.movie_id, "title": self.movie_title,
                          "language": self.language, "certificate": self.certificate,
                          "duration_min": self.duration_min},
                "starts_at": self.starts_at.isoformat()}


@dataclass(frozen=True)
class SeatInfo:
    seat_id: str
    row: str
    number: int
    category: str
    price_paise: int
    blocked: bool
    position: int = 0  # across the row; a gap is an aisle (`seats/best.py`). 0: `number`
    accessible: bool = False

    def __post_init__(self) -> None:
        if self.position == 0:
            object.__setattr__(self, "position", self.number)


@dataclass(frozen=True)
class ScreenInfo:
    """A screen's best-available settings (`seats/best.py`): its sweet spot (None: the
    default) and what a manual pick that leaves an orphan seat gets."""

    id: str
    focal_row: str | None = None
    focal_seat: float | None = None
    no_orphan_seats: str = "warn"


SHOW_QUERY = """
SELECT sh.id, sc.theatre_id, sh.screen_id, sc.name AS screen_name, sh.movie_id,
       m.title, m.language, m.certificate, m.duration_min, sh.starts_at
FROM show sh JOIN screen sc ON sc.id = sh.screen_id JOIN movie m ON m.id = sh.movie_id
"""


class Catalog:
    """Loaded once at start; shows added later are fetched on first use."""

    def __init__(self, connections: Connections, placement: Placement) -> None:
        self._pool = connections.pg_catalog()
        self._region = connections.local_region
        self._placement = placement
        self.theatres: dict[str, TheatreInfo] = {}
        self._shows: dict[int, ShowInfo] = {}
        self._shows_by_theatre: dict[str, list[int]] = {}
        self._layouts: dict[str, tuple[SeatInfo, ...]] = {}
        self._seat_index: dict[str, dict[str, SeatInfo]] = {}
        self._layout_locks: dict[str, asyncio.Lock] = {}
        self._screens: dict[str, ScreenInfo] = {}

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection to the local catalog; its outage is a 503, not a 500."""
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except PG_UNAVAILABLE as exc:
            raise RegionUnavailable(self._region, "catalog in postgres") from exc

    async def load(self) -> None:
        async with self._read() as conn:
            theatres = await conn.fetch(
                "SELECT t.id, t.name, t.address, c.name AS city, c.state, t.timezone "
                "FROM theatre t JOIN city c ON c.id = t.city_id ORDER BY t.id")
            shows = await conn.fetch(SHOW_QUERY + " ORDER BY sh.starts_at, sh.id")
        self.theatres = {r["id"]: TheatreInfo(r["id"], r["name"], r["address"], r["city"],
                                              r["state"], self._placement.region_of(r["id"]),
                                              r["timezone"])
                         for r in theatres}
        for row in shows:
            self._add_show(row)

    def _add_show(self, row: asyncpg.Record) -> ShowInfo:
        show = ShowInfo(row["id"], row["theatre_id"], row["screen_id"], row["screen_name"],
                        row["movie_id"], row["title"], row["language"], row["certificate"],
                        row["duration_min"], row["starts_at"],
                        self._placement.region_of(row["theatre_id"]))
        if show.id not in self._shows:
            self._shows[show.id] = show
            self._shows_by_theatre.setdefault(show.theatre_id, []).append(show.id)
        return show

    @property
    def placement(self) -> Placement:
        return self._placement

    def rehome(self, placement: Placement) -> dict[int, str]:
        """Route by `placement` from now on (a newer topology epoch). Returns the shows
        whose home region changed, each with its old region."""
        self._placement = placement
        self.theatres = {t.id: replace(t, region=placement.region_of(t.id))
                         for t in self.theatres.values()}
        moved = {}
        for show_id, show in list(self._shows.items()):
            region = placement.region_of(show.theatre_id)
            if region != show.region:
                moved[show_id] = show.region
                self._shows[show_id] = replace(show, region=region)
        return moved

    def region_of_show(self, show_id: int) -> str | None:
        show = self._shows.get(show_id)
        return show.region if show else None

    def theatre(self, theatre_id: str) -> TheatreInfo:
        try:
            return self.theatres[theatre_id]
        except KeyError:
            raise NotFound(f"no theatre {theatre_id!r}", id=theatre_id) from None

    def shows_of(self, theatre_id: str) -> list[ShowInfo]:
        self.theatre(theatre_id)
        return [self._shows[i] for i in self._shows_by_theatre.get(theatre_id, [])]

    async def show(self, show_id: int) -> ShowInfo:
        show = self._shows.get(show_id)
        if show is not None:
            return show
        async with self._read() as conn:
            row = await conn.fetchrow(SHOW_QUERY + " WHERE sh.id = $1", show_id)
        if row is None:
            raise NotFound(f"no show {show_id}", id=show_id)
        return self._add_show(row)

    async def layout(self, screen_id: str) -> tuple[SeatInfo, ...]:
        layout = self._layouts.get(screen_id)
        if layout is not None:
            return layout
        lock = self._layout_locks.setdefault(screen_id, asyncio.Lock())
        async with lock:  # one query per screen, however many requests miss at once
            if screen_id not in self._layouts:
                async with self._read() as conn:
                    rows = await conn.fetch(
                        "SELECT seat_id, row_label, number, category, price_paise, blocked, "
                        "coalesce(position, number), accessible "
                        "FROM seat WHERE screen_id = $1 ORDER BY row_label, number", screen_id)
                    screen = await conn.fetchrow(
                        "SELECT focal_row, focal_seat, no_orphan_seats FROM screen "
                        "WHERE id = $1", screen_id)
                layout = tuple(SeatInfo(*r) for r in rows)
                self._seat_index[screen_id] = {seat.seat_id: seat for seat in layout}
                self._screens[screen_id] = ScreenInfo(screen_id) if screen is None else \
                    ScreenInfo(screen_id, screen["focal_row"],
                               None if screen["focal_seat"] is None
                               else float(screen["focal_seat"]), screen["no_orphan_seats"])
                self._layouts[screen_id] = layout
        return self._layouts[screen_id]

    async def seats_by_id(self, screen_id: str) -> dict[str, SeatInfo]:
        """The layout keyed by seat id (built once per screen)."""
        await self.layout(screen_id)
        return self._seat_index[screen_id]

    async def screen(self, screen_id: str) -> ScreenInfo:
        """The screen's best-available settings (read with its layout)."""
        await self.layout(screen_id)
        return self._screens[screen_id]
