"""Finding shows and seats of the seeded test catalog."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import Cluster


def shows_in(cluster: Cluster, catalog: Any, region: str) -> list[int]:
    """Ids of seeded shows whose theatre's home is `region`."""
    theatre_of_screen = catalog.theatre_of_screen()
    return [s.id for s in catalog.shows
            if cluster.placement.region_of(theatre_of_screen[s.screen_id]) == region]


def seats_of(catalog: Any, show_id: int, count: int | None = None) -> list[str]:
    """Sellable seat ids of a show, front to back."""
    show = next(s for s in catalog.shows if s.id == show_id)
    seats = [s.seat_id for s in catalog.seats if s.screen_id == show.screen_id and not s.blocked]
    return seats[:count] if count is not None else seats


def blocked_seat(catalog: Any, region_shows: list[int]) -> tuple[int, str] | None:
    for show_id in region_shows:
        show = next(s for s in catalog.shows if s.id == show_id)
        for seat in catalog.seats:
            if seat.screen_id == show.screen_id and seat.blocked:
                return show_id, seat.seat_id
    return None
