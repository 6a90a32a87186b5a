"""The ownership the stores record, read across regions, and whether a topology agrees.

A topology's theatre map (explicit entries, then the hash ring) must place
every theatre where the stores say it lives: the region whose `theatre_owner`
row is OWNED (or FROZEN: a move out of it is unfinished). A file that
disagrees would route writes where the bookings are not, or make the launcher
seed fresh seats for a theatre that sold elsewhere; the launcher, `topology
apply` and the nodes refuse it and say how to fix it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bookcluster.stores.ownership import FROZEN, MOVED, OWNED, Owner, owners
from bookcluster.stores.sessions import connect as connect  # the commands' session
from bookcluster.topology.model import Topology
from bookcluster.topology.placement import Placement

# region -> theatre -> that region's record of it
Recorded = dict[str, dict[str, Owner]]


class OwnershipConflict(RuntimeError):
    """The topology's theatre map disagrees with the ownership the stores record."""

    def __init__(self, conflicts: list[Conflict], what: str) -> None:
        self.conflicts = conflicts
        lines = [f"{what} disagrees with the ownership recorded in the stores "
                 f"({len(conflicts)} theatre(s)):"]
        lines += [f"  {c.theatre}: {c.problem}; {c.fix}" for c in conflicts]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Conflict:
    theatre: str
    problem: str
    fix: str


async def recorded_owners(topology: Topology) -> Recorded:
    """Every region's ownership records (a region without the table yet has none)."""
    out: Recorded = {}
    for region in topology.regions:
        conn = await connect(topology, region)
        try:
            exists = await conn.fetchval("SELECT to_regclass('theatre_owner') IS NOT NULL")
            out[region] = await owners(conn) if exists else {}
        finally:
            await conn.close()
    return out


def current_owner(recorded: Recorded, theatre: str) -> tuple[list[str], Owner | None]:
    """The regions that own `theatre` now (OWNED, or FROZEN: moving out) and, if exactly
    one does, its record."""
    holders = [r for r, records in recorded.items()
               if theatre in records and records[theatre].state in (OWNED, FROZEN)]
    return holders, recorded[holders[0]][theatre] if len(holders) == 1 else None


def conflicts(topology: Topology, recorded: Recorded) -> list[Conflict]:
    """Theatres the topology places elsewhere than the stores say they live."""
    placement = Placement(topology)
    theatres = sorted({t for records in recorded.values() for t in records})
    found = []
    for theatre in theatres:
        holders, record = current_owner(recorded, theatre)
        placed = placement.region_of(theatre)
        if len(holders) > 1:
            found.append(Conflict(theatre, f"owned by {', '.join(holders)} at once",
                                  "resume its unfinished move: `bookcluster topology move "
                                  f"{theatre} --to {placed}`"))
        elif record is None:
            moved = {r: rec for r, rec in ((r, recs.get(theatre)) for r, recs in recorded.items())
                     if rec is not None and rec.state == MOVED}
            if moved:
                found.append(Conflict(theatre, "no region owns it (every record says it "
                                      "moved away)", "restore its owner's record from backup"))
        elif record.state == FROZEN:
            if placed not in (holders[0], record.owner):
                found.append(Conflict(theatre, f"placed in {placed}, but it is moving from "
                                      f"{holders[0]} to {record.owner}",
                                      f"finish the move: `bookcluster topology move {theatre} "
                                      f"--to {record.owner}` (or `--rollback`)"))
        elif placed != holders[0]:
            found.append(Conflict(
                theatre, f"the topology places it in {placed}, but {holders[0]} owns it "
                f"(since epoch {record.epoch})",
                f"move it with `bookcluster topology move {theatre} --to {placed}` on the "
                f"running cluster, or map it back: `theatres: {{{theatre}: {holders[0]}}}`"))
    return found


def check(topology: Topology, recorded: Recorded, what: str) -> None:
    """Raise OwnershipConflict naming every theatre the topology misplaces."""
    found = conflicts(topology, recorded)
    if found:
        raise OwnershipConflict(found, what)


def owner_map(recorded: Recorded) -> Mapping[str, str]:
    """theatre -> the one region that owns it (theatres with no single owner left out)."""
    out = {}
    for theatre in {t for records in recorded.values() for t in records}:
        holders, record = current_owner(recorded, theatre)
        if record is not None:
            out[theatre] = holders[0]
    return out
