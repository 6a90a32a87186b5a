"""A show of its own for best-available tests: a 25 x 40 (1,000-seat) screen with the
demo's aisles and sweet spot, added to a running cluster's catalog (every region) and
seats (its theatre's home), and taken away again."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bookcluster.ops import demo_catalog
from bookcluster.seats import keys
from bookcluster.stores.connections import make_master
from tests.integration.conftest import Cluster


@dataclass(frozen=True)
class BestShow:
    id: int
    theatre: str
    region: str
    seats: list[demo_catalog.Seat]
    focal_row: str


@asynccontextmanager
async def best_show(cluster: Cluster, catalog: Any, theatre: str, rows: int = 25,
                    per_row: int = 40, no_orphan_seats: str = "warn"
                    ) -> AsyncIterator[BestShow]:
    """A new show of `theatre` on a new `rows` x `per_row` screen (no seat blocked)."""
    show_id = 7_000_000 + random.randrange(1_000_000)
    screen = f"best-{show_id}"
    seats = demo_catalog._layout(random.Random(0), screen, 1.0, (rows, per_row))
    region = cluster.placement.region_of(theatre)
    for r in cluster.topology.regions:
        conn = await cluster.pg(r)
        try:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO screen (id, theatre_id, name, focal_row, no_orphan_seats) "
                    "VALUES ($1, $2, 'Best', $3, $4)", screen, theatre,
                    demo_catalog.sweet_spot(rows), no_orphan_seats)
                await conn.executemany(
                    "INSERT INTO seat (screen_id, seat_id, row_label, number, category, "
                    "price_paise, blocked, position, accessible) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    [(s.screen_id, s.seat_id, s.row_label, s.number, s.category,
                      s.price_paise, s.blocked, s.position, s.accessible) for s in seats])
                await conn.execute(
                    "INSERT INTO show (id, screen_id, movie_id, starts_at) "
                    "VALUES ($1, $2, $3, $4)", show_id, screen, catalog.movies[0].id,
                    datetime.now(UTC) + timedelta(days=1))
                if r == region:
                    await conn.executemany(
                        "INSERT INTO show_seat (show_id, seat_id, status) "
                        "VALUES ($1, $2, 'AVAILABLE')", [(show_id, s.seat_id) for s in seats])
        finally:
            await conn.close()
    master = make_master(cluster.topology, region, near=region)
    try:
        sibling = next(s.id for s in catalog.shows
                       if catalog.theatre_of_screen()[s.screen_id] == theatre)
        owner = await master.get(keys.show_owner(sibling))
        if owner is not None:
            await master.set(keys.show_owner(show_id), owner)
        await master.setnx(keys.show_version(show_id), 0)
    finally:
        await master.aclose()
    try:
        yield BestShow(show_id, theatre, region, seats, demo_catalog.sweet_spot(rows))
    finally:
        await _drop(cluster, show_id, screen)


async def _drop(cluster: Cluster, show_id: int, screen: str) -> None:
    for r in cluster.topology.regions:
        conn = await cluster.pg(r)
        try:
            async with conn.transaction():
                bookings = "SELECT id FROM booking WHERE show_id = $1"
                for table in ("ticket", "payment"):  # what references a booking
                    await conn.execute(f"DELETE FROM {table} WHERE booking_id IN ({bookings})",
                                       show_id)
                await conn.execute("DELETE FROM mirror_change WHERE show_id = $1", show_id)
                await conn.execute("DELETE FROM booking_seat WHERE show_id = $1", show_id)
                await conn.execute("DELETE FROM booking WHERE show_id = $1", show_id)
                await conn.execute("DELETE FROM show_seat WHERE show_id = $1", show_id)
                await conn.execute("DELETE FROM show WHERE id = $1", show_id)
                await conn.execute("DELETE FROM seat WHERE screen_id = $1", screen)
                await conn.execute("DELETE FROM screen WHERE id = $1", screen)
        finally:
            await conn.close()
        master = make_master(cluster.topology, r, near=r)
        try:
            await master.delete(*keys.show_keys(show_id), keys.show_layout(show_id))
        finally:
            await master.aclose()
