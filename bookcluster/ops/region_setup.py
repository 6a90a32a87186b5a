"""One region's database set-up, done once however many launchers start it at once.

On one machine a single launcher runs every region. Across hosts
(`bookcluster up --region R`, or a compose service per region) several processes
may reach the same region's fresh primary together: a restarted host, an init
container and an operator's command. Creating the role and database, applying
migrations and seeding the catalog each check-then-write, so two of them at once
could both decide to seed. They run under one session advisory lock on the
region's primary, in the `postgres` database (which exists before ours does; the
lock is per database), held by its own connection around the whole set-up.

Seeding one region alone (`seed_alone`) checks the topology against what the
region itself records (the check a node makes at start) and, before it seeds a
fresh region, against every other region's records: a theatre that another
region owns is never seeded fresh here (its seats were sold there). The other
regions' hosts may still be starting, so it waits for each (`PEER_WAIT_S`), and
refuses to seed when one stays unreachable. A region added to a running cluster
is not seeded this way: see `seed.copy_catalog` and docs/topology.md, "Adding a region".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg

from bookcluster.db.create import create_database
from bookcluster.db.migrate import migrate
from bookcluster.ops import ownership as cluster_ownership
from bookcluster.ops.demo_catalog import Catalog
from bookcluster.ops.seed import adopt_legacy_ownership, is_seeded, seed_region
from bookcluster.stores.connections import PG_TOOL_SESSION, connect_primary
from bookcluster.stores.ownership import (
    FROZEN,
    MOVED,
    OWNED,
    Owner,
    latest_topology,
    owners,
    store_topology,
)
from bookcluster.topology.model import Region, Topology
from bookcluster.topology.placement import Placement

# Any constant: it only serialises set-ups of one region's PostgreSQL.
SETUP_LOCK_ID = 7_245_014
LOCK_TIMEOUT_S = 300.0  # a seed of the full demo catalog takes seconds; a stuck one, not this
# How long a fresh region waits for another region's PostgreSQL before seeding: hosts
# started together bring theirs up within this.
PEER_WAIT_S = 120.0


@asynccontextmanager
async def lock(topology: Topology, region: Region) -> AsyncIterator[None]:
    """Hold the region's set-up lock (waiting for another holder to finish)."""
    conn = await connect_primary(region.pg_members, topology.secrets, admin=True,
                                 database="postgres", server_settings=PG_TOOL_SESSION)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", SETUP_LOCK_ID,
                           timeout=LOCK_TIMEOUT_S)
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", SETUP_LOCK_ID)
    finally:
        await conn.close()


async def create_and_migrate(topology: Topology, region: Region) -> list[int]:
    """The application role and database, then every migration. Returns those applied."""
    await create_database(region.pg_members, topology.secrets)
    conn = await connect_primary(region.pg_members, topology.secrets,
                                 server_settings=PG_TOOL_SESSION)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


class RegionSetupError(RuntimeError):
    pass


def local_conflicts(topology: Topology, region: str, records: dict[str, Owner]) -> list[str]:
    """What `region`'s own records say against the topology's map: a theatre it owns
    (or is moving out) placed elsewhere, or one placed here that it moved away."""
    placement = Placement(topology)
    found = []
    for theatre, record in sorted(records.items()):
        state, owner = record.state, record.owner
        placed = placement.region_of(theatre)
        if state in (OWNED, FROZEN) and placed != region and not (
                state == FROZEN and placed == owner):
            found.append(f"  {theatre}: the topology places it in {placed}, but {region} owns "
                         f"it; `bookcluster topology move {theatre} --to {placed}` on the "
                         f"running cluster, or map it back: `theatres: {{{theatre}: {region}}}`")
        elif state == MOVED and placed == region:
            found.append(f"  {theatre}: the topology places it in {region}, but it moved to "
                         f"{owner}; map it there: `theatres: {{{theatre}: {owner}}}`")
    return found


async def seed_alone(topology: Topology, region: str, catalog: Catalog,
                     progress: Callable[[str], None] = print) -> None:
    """Seed `region` from the demo catalog if it is fresh, else check the map against
    its records; record this topology there if the region has none yet."""
    if not await is_seeded(topology, region):
        await check_others(topology, region, progress)
        rows = await seed_region(topology, region, catalog)
        progress(f"  {region}: {len(catalog.theatres)} theatres, {len(catalog.shows)} shows "
                 f"in catalog; {rows} seats of its own shows")
    else:
        conn = await cluster_ownership.connect(topology, region)
        try:
            records = await owners(conn)
        finally:
            await conn.close()
        if not records:
            count = await adopt_legacy_ownership(topology, region)
            progress(f"  {region}: recorded ownership of its {count} theatres "
                     "(data from before ownership records)")
        found = local_conflicts(topology, region, dict(records))
        if found:
            raise RegionSetupError(f"{topology.path} disagrees with the ownership {region} "
                                   f"records ({len(found)} theatre(s)):\n" + "\n".join(found))
        progress(f"  {region}: catalog already present, not seeding")
    await _record_first_topology(topology, region, progress)


async def check_others(topology: Topology, region: str, progress: Callable[[str], None],
                        wait_s: float = PEER_WAIT_S) -> None:
    """Before seeding `region` fresh: no theatre the map places here is owned (or being
    moved out) by another region. Raises RegionSetupError, having written nothing."""
    placement = Placement(topology)
    found = []
    for other in (r for r in topology.regions if r != region):
        records = await _records_of(topology, other, progress, wait_s)
        for theatre, record in sorted(records.items()):
            if record.state in (OWNED, FROZEN) and placement.region_of(theatre) == region:
                found.append(f"  {theatre}: the topology places it in {region}, but {other} "
                             f"owns it (since epoch {record.epoch}): start {region} with the "
                             f"map the cluster runs, `topology apply` the new region, then "
                             f"`bookcluster topology move {theatre} --to {region}`")
    if found:
        raise RegionSetupError(f"{topology.path} would seed theatres another region owns "
                               f"({len(found)}); nothing was written:\n" + "\n".join(found))


async def _records_of(topology: Topology, region: str, progress: Callable[[str], None],
                      wait_s: float) -> dict[str, Owner]:
    """`region`'s ownership records (none while it has no schema), waiting for its
    PostgreSQL to come up."""
    deadline = time.monotonic() + wait_s
    said = False
    while True:
        try:
            conn = await cluster_ownership.connect(topology, region)
        except (OSError, asyncpg.PostgresError) as exc:
            if time.monotonic() > deadline:
                raise RegionSetupError(
                    f"cannot read {region}'s ownership records ({exc}) to check that no "
                    f"theatre seeded here is owned there; start {region} first") from None
            if not said:
                progress(f"  waiting for {region}'s PostgreSQL to check its ownership records")
                said = True
            await asyncio.sleep(1.0)
            continue
        try:
            if not await conn.fetchval("SELECT to_regclass('theatre_owner') IS NOT NULL"):
                return {}
            return await owners(conn)
        finally:
            await conn.close()


async def _record_first_topology(topology: Topology, region: str,
                                 progress: Callable[[str], None]) -> None:
    """Record the topology a fresh region starts from. A newer file is not recorded
    here (only in this region, behind the running processes' backs, unlike the
    whole-cluster launcher that starts them all): `topology apply` takes it."""
    conn = await cluster_ownership.connect(topology, region)
    try:
        stored = await latest_topology(conn)
        if stored is None:
            await store_topology(conn, topology.epoch, topology.path.read_text())
        elif stored[0] < topology.epoch:
            progress(f"  {region}: {topology.path} is at epoch {topology.epoch}, the cluster at "
                     f"{stored[0]}: `bookcluster topology apply` it")
    finally:
        await conn.close()
