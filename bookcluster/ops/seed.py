"""Write the demo catalog into every region, and seat state into each home region.

Every region's PostgreSQL gets the whole catalog (so catalog reads never leave
the region); show_seat rows, the ownership record (`theatre_owner`, at the
topology's epoch) and Redis seat state go only to the theatre's home.

Only a fresh cluster is seeded from the demo catalog. A region added to a
seeded cluster gets a copy of a seeded region's catalog and no seats: the
theatres it should own come to it by `bookcluster topology move`, with
everything they sold, never as fresh AVAILABLE seats. A topology whose theatre
map disagrees with the recorded ownership is refused (`bookcluster/ops/ownership.py`).
"""

from __future__ import annotations

import io
from collections.abc import Callable

from bookcluster.ops import ownership as cluster_ownership
from bookcluster.ops.applied import check_stored
from bookcluster.ops.demo_catalog import Catalog
from bookcluster.seats import keys
from bookcluster.stores import ownership
from bookcluster.stores.connections import PG_TOOL_SESSION, connect_primary, make_master
from bookcluster.topology.model import Topology
from bookcluster.topology.placement import Placement
from bookcluster.worker.epochs import applied

CATALOG_TABLES = ["city", "theatre", "screen", "seat", "movie", "show"]


def _rows(catalog: Catalog) -> dict[str, tuple[list[str], list[tuple[object, ...]]]]:
    return {
        "city": (["id", "name", "state"], [(c.id, c.name, c.state) for c in catalog.cities]),
        "theatre": (["id", "city_id", "name", "address"],
                    [(t.id, t.city_id, t.name, t.address) for t in catalog.theatres]),
        "screen": (["id", "theatre_id", "name", "focal_row"],
                   [(s.id, s.theatre_id, s.name, s.focal_row) for s in catalog.screens]),
        "seat": (["screen_id", "seat_id", "row_label", "number", "category", "price_paise",
                  "blocked", "position", "accessible"],
                 [(s.screen_id, s.seat_id, s.row_label, s.number, s.category, s.price_paise,
                   s.blocked, s.position or s.number, s.accessible) for s in catalog.seats]),
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
    home_theatres = [t.id for t in catalog.theatres if placement.region_of(t.id) == region]
    conn = await connect_primary(topology.region(region).pg_members, topology.secrets,
                                 server_settings=PG_TOOL_SESSION)
    try:
        async with conn.transaction():
            for table, (columns, rows) in _rows(catalog).items():
                await conn.copy_records_to_table(table, records=rows, columns=columns)
            await conn.copy_records_to_table(
                "show_seat", records=show_seats, columns=["show_id", "seat_id", "status"])
            await ownership.record_owned(conn, home_theatres, topology.epoch)
    finally:
        await conn.close()

    owned = str(topology.epoch)  # the owner key's value: owned here since this epoch
    redis = make_master(topology, region, near=region, timeout_s=10.0)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for show in home_shows:
                blocked = [s for s, b in seats_by_screen[show.screen_id] if b]
                if blocked:
                    pipe.sadd(keys.show_blocked(show.id), *blocked)
                pipe.setnx(keys.show_version(show.id), 0)
                pipe.set(keys.show_owner(show.id), owned)
            await pipe.execute()
    finally:
        await redis.aclose()
    return len(show_seats)


async def copy_catalog(topology: Topology, source: str, region: str) -> int:
    """A new region's catalog, copied from a seeded region (the same ids and times,
    whenever it was built). No seats: it owns no theatre yet. Returns theatres copied."""
    src = await cluster_ownership.connect(topology, source)
    dst = await cluster_ownership.connect(topology, region)
    try:
        async with dst.transaction():
            for table in CATALOG_TABLES:
                buffer = io.BytesIO()
                await src.copy_from_table(table, output=buffer)
                buffer.seek(0)
                await dst.copy_to_table(table, source=buffer)
        return int(await dst.fetchval("SELECT count(*) FROM theatre"))
    finally:
        await src.close()
        await dst.close()


async def adopt_legacy_ownership(topology: Topology, region: str) -> int:
    """A cluster seeded before ownership was recorded: its regions own what the topology
    placed there, which is where its seats are. Returns theatres recorded."""
    placement = Placement(topology)
    conn = await cluster_ownership.connect(topology, region)
    try:
        theatres = [r["id"] for r in await conn.fetch("SELECT id FROM theatre")
                    if placement.region_of(r["id"]) == region]
        await ownership.record_owned(conn, theatres, topology.epoch)
    finally:
        await conn.close()
    return len(theatres)


async def store_document(topology: Topology, region: str) -> None:
    """Record the topology the cluster starts from, unless a newer one was applied (the
    nodes adopt that one)."""
    conn = await cluster_ownership.connect(topology, region)
    try:
        stored = await ownership.latest_topology(conn)
        if stored is None or stored[0] < topology.epoch:
            await ownership.store_topology(conn, topology.epoch, topology.path.read_text())
    finally:
        await conn.close()


async def seed_cluster(topology: Topology, catalog: Catalog,
                       progress: Callable[[str], None] = print, *,
                       record_topology: bool = True) -> None:
    """Seed what is not seeded yet; with `record_topology`, store this topology as the
    applied one where none newer is (not for a region added to a running cluster: the
    apply that follows stores it everywhere)."""
    recorded = await cluster_ownership.recorded_owners(topology)
    seeded = {region: await is_seeded(topology, region) for region in topology.regions}
    if any(seeded.values()) and not any(recorded[r] for r in topology.regions if seeded[r]):
        for region in (r for r in topology.regions if seeded[r]):
            count = await adopt_legacy_ownership(topology, region)
            progress(f"  {region}: recorded ownership of its {count} theatres "
                     f"(data from before ownership records)")
        recorded = await cluster_ownership.recorded_owners(topology)
    if record_topology:  # an older file than the cluster runs: say so, not a conflict
        check_stored(topology, *await applied(topology))
    cluster_ownership.check(topology, recorded, f"{topology.path}")
    source = next((r for r in topology.regions if seeded[r]), None)
    for region in topology.regions:
        if seeded[region]:
            progress(f"  {region}: catalog already present, not seeding")
        elif source is not None:
            theatres = await copy_catalog(topology, source, region)
            progress(f"  {region}: new region: catalog of {theatres} theatres copied from "
                     f"{source}; no seats (`bookcluster topology move` brings theatres)")
        else:
            rows = await seed_region(topology, region, catalog)
            progress(f"  {region}: {len(catalog.theatres)} theatres, {len(catalog.shows)} "
                     f"shows in catalog; {rows} seats of its own shows")
        if record_topology:
            await store_document(topology, region)
