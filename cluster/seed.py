"""Write the demo catalog into every region, and seat state into each home region.

Every region's PostgreSQL gets the whole catalog (so catalog reads never leave
the region); show_seat rows and Redis seat state go only to the theatre's home.
"""

from __future__ import annotations

from collections.abc import Callable

from cluster.demo_catalog import Catalog
from region_node import keys
from router.placement import Placement
from router.registry import PG_TOOL_SESSION, connect_primary, make_redis
from router.topology import Topology

CATALOG_TABLES = ["city", "theatre", "screen", "seat", "movie", "show"]


def _rows(catalog: Catalog) -> dict[str, tuple[list[str], list[tuple[object, ...]]]]:
    return {
        "city": (["id", "name", "state"], [(c.id, c.name, c.state) for c in catalog.cities]),
        "theatre": (["id", "city_id", "name", "address"],
                    [(t.id, t.city_id, t.name, t.address) for t in catalog.theatres]),
        "screen": (["id", "theatre_id", "name"],
                   [(s.id, s.theatre_id, s.name) for s in catalog.screens]),
        "seat": (["screen_id", "seat_id", "row_label", "number", "category", "price_paise",
                  "blocked"],
                 [(s.screen_id, s.seat_id, s.row_label, s.number, s.category, s.price_paise,
                   s.blocked) for s in catalog.seats]),
        "movie": (["id", "title", "language", "duration_min", "certificate"],
                  [(m.id, m.title, m.language, m.duration_min, m.certificate)
                   for m in catalog.movies]),
        "show": (["id", "screen_id", "movie_id", "starts_at"],
                 [(s.id, s.screen_id, s.movie_id, s.starts_at) for s in catalog.shows]),
    }


async def is_seeded(topology: Topology, region: str) -> bool:
    conn = await connect_primary(topology.region(region).pg_members, topology.secrets)
    try:
        return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM theatre)"))
    finally:
        await conn.close()


async def seed_region(topology: Topology, region: str, catalog: Catalog) -> int:
    """Seed one region. Returns how many show_seat rows it wrote."""
    placement = Placement(topology)
    theatre_of_screen = catalog.theatre_of_screen()
    home_shows = [s for s in catalog.shows
                  if placement.region_of(theatre_of_screen[s.screen_id]) == region]
    seats_by_screen: dict[str, list[tuple[str, bool]]] = {}
    for seat in catalog.seats:
        seats_by_screen.setdefault(seat.screen_id, []).append((seat.seat_id, seat.blocked))

    show_seats = [
        (show.id, seat_id, "UNAVAILABLE" if blocked else "AVAILABLE")
        for show in home_shows for seat_id, blocked in seats_by_screen[show.screen_id]
    ]
    conn = await connect_primary(topology.region(region).pg_members, topology.secrets,
                                 server_settings=PG_TOOL_SESSION)
    try:
        async with conn.transaction():
            for table, (columns, rows) in _rows(catalog).items():
                await conn.copy_records_to_table(table, records=rows, columns=columns)
            await conn.copy_records_to_table(
                "show_seat", records=show_seats, columns=["show_id", "seat_id", "status"])
    finally:
        await conn.close()

    redis = make_redis(topology.region(region).redis_master, topology.secrets, timeout_s=10.0)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for show in home_shows:
                blocked = [s for s, b in seats_by_screen[show.screen_id] if b]
                if blocked:
                    pipe.sadd(keys.show_blocked(show.id), *blocked)
                pipe.setnx(keys.show_version(show.id), 0)
            await pipe.execute()
    finally:
        await redis.aclose()
    return len(show_seats)


async def seed_cluster(topology: Topology, catalog: Catalog,
                       progress: Callable[[str], None] = print) -> None:
    for region in topology.regions:
        if await is_seeded(topology, region):
            progress(f"  {region}: catalog already present, not seeding")
            continue
        rows = await seed_region(topology, region, catalog)
        progress(f"  {region}: {len(catalog.theatres)} theatres, {len(catalog.shows)} shows "
                 f"in catalog; {rows} seats of its own shows")
