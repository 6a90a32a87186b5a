"""The demo catalog: the default layouts stay as they were; a fixed layout is exact."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime

import pytest

from bookcluster.booking.formats import UnknownTimeZone
from bookcluster.ops.demo_catalog import CatalogSpec, Theatre, build_catalog

SMALL = CatalogSpec(theatres_per_city=1, cities_per_region=1, days=1, shows_per_day=2)


def test_default_layouts_are_100_to_300_seats() -> None:
    catalog = build_catalog(SMALL, date(2026, 12, 7))
    per_screen = Counter(seat.screen_id for seat in catalog.seats)
    assert per_screen and all(100 <= n <= 300 for n in per_screen.values())


def test_fixed_layout_gives_every_screen_rows_times_seats_none_blocked() -> None:
    fixed = CatalogSpec(theatres_per_city=1, cities_per_region=1, days=1, shows_per_day=2,
                        layout=(25, 40))
    catalog = build_catalog(fixed, date(2026, 12, 7))
    per_screen = Counter(seat.screen_id for seat in catalog.seats)
    assert set(per_screen.values()) == {1000}
    assert not any(seat.blocked for seat in catalog.seats)
    assert len({(s.screen_id, s.seat_id) for s in catalog.seats}) == len(catalog.seats)


def test_theatres_are_in_india_and_their_shows_on_its_wall_clock() -> None:
    catalog = build_catalog(SMALL, date(2026, 12, 7))
    assert {t.timezone for t in catalog.theatres} == {"Asia/Kolkata"}
    first = min(catalog.shows, key=lambda s: s.starts_at)
    assert first.starts_at == datetime(2026, 12, 7, 4, 30, tzinfo=UTC)  # 10:00 am IST


def test_a_theatre_in_an_unknown_zone_is_refused_by_name() -> None:
    assert Theatre("london-01", "london", "Odeon", "Leicester Square",
                   "Europe/London").timezone == "Europe/London"
    with pytest.raises(UnknownTimeZone, match="theatre 'pune-09': unknown time zone 'IST'"):
        Theatre("pune-09", "pune", "PVR", "Kothrud", "IST")
