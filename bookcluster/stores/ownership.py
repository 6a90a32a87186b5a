"""Theatre ownership as data, fenced by the topology epoch.

Each region's PostgreSQL records the theatres it owns (`theatre_owner`,
migration 0009): OWNED since an epoch, FROZEN while a move copies it out, or
MOVED to another region at an epoch. Every write starts with `bc_own` in its
own transaction, which refuses a theatre this region may not write at the
epoch the node believes:
- MOVED, or owned here only since a newer epoch: `Moved` (the node reloads its
  topology and routes the write again, `access.py`);
- FROZEN: `TheatreMoving` (503, retry shortly).
The home master mirrors the same fact per show (`keys.show_owner`), so the hold
script refuses before it publishes anything; PostgreSQL still decides.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from bookcluster.errors import TheatreMoving
from bookcluster.topology.errors import Moved

OWNED, FROZEN, MOVED = "OWNED", "FROZEN", "MOVED"
MOVING_VALUE = "moving"  # the Redis owner key of a frozen show


@dataclass(frozen=True)
class Owner:
    """One region's record of one theatre."""

    state: str
    epoch: int
    owner: str | None = None  # FROZEN: the move's target; MOVED: the new owner

    def redis_value(self) -> str:
        if self.state == OWNED:
            return str(self.epoch)
        if self.state == FROZEN:
            return MOVING_VALUE
        return f"moved {self.owner} {self.epoch}"


def refusal(exc: asyncpg.RaiseError, region: str) -> Exception | None:
    """The error a `bc_own` refusal stands for (None: some other RAISE)."""
    return fence_refusal(exc.message, exc.detail, region)


def fence_refusal(message: str, detail: str | None, region: str) -> Exception | None:
    """The error for `bc_own`'s refusal `message` with its DETAIL (also as a batch of
    holds answers it per item, `bc_record_holds`); None: not a refusal of bc_own."""
    detail = detail or ""
    if message == "bc_theatre_moving":
        return TheatreMoving(region, detail or None)
    if message == "bc_moved":
        owner, _, epoch = detail.partition(" ")
        return Moved(owner or None, int(epoch or 0))
    return None


def script_refusal(value: str, region: str) -> Exception:
    """The error for the hold script's {-1, owner value}."""
    if value == MOVING_VALUE:
        return TheatreMoving(region, None)
    if value.startswith("moved "):
        _, owner, epoch = value.split(" ")
        return Moved(owner, int(epoch))
    return Moved(None, int(value))  # owned here since an epoch newer than ours


async def owners(conn: asyncpg.Connection) -> dict[str, Owner]:
    """Every theatre this region has a record of."""
    return {r["theatre_id"]: Owner(r["state"], r["epoch"], r["owner"])
            for r in await conn.fetch("SELECT theatre_id, state, epoch, owner FROM theatre_owner")}


async def record_owned(conn: asyncpg.Connection, theatres: Iterable[str], epoch: int) -> None:
    """This region owns `theatres` since `epoch` (a fresh cluster's seeding)."""
    await conn.execute(
        "INSERT INTO theatre_owner (theatre_id, state, epoch) "
        "SELECT t, 'OWNED', $2 FROM unnest($1::text[]) t", list(theatres), epoch)


async def shows_by_theatre(conn: asyncpg.Connection,
                           theatres: Iterable[str] | None = None) -> dict[str, list[int]]:
    """The catalog's shows of each theatre (all theatres when None)."""
    rows = await conn.fetch(
        "SELECT sc.theatre_id, sh.id FROM show sh JOIN screen sc ON sc.id = sh.screen_id "
        "WHERE $1::text[] IS NULL OR sc.theatre_id = ANY($1::text[]) ORDER BY sh.id",
        None if theatres is None else list(theatres))
    out: dict[str, list[int]] = {}
    for row in rows:
        out.setdefault(row["theatre_id"], []).append(row["id"])
    return out


async def latest_topology(conn: asyncpg.Connection,
                          epoch: int | None = None) -> tuple[int, str] | None:
    """The newest applied topology document (or the one of `epoch`) in this region."""
    row = await conn.fetchrow(
        "SELECT epoch, document FROM cluster_topology "
        "WHERE $1::integer IS NULL OR epoch = $1 ORDER BY epoch DESC LIMIT 1", epoch)
    return None if row is None else (row["epoch"], row["document"])


async def store_topology(conn: asyncpg.Connection, epoch: int, document: str) -> None:
    await conn.execute(
        "INSERT INTO cluster_topology (epoch, document) VALUES ($1, $2) "
        "ON CONFLICT (epoch) DO UPDATE SET document = EXCLUDED.document, applied_at = now()",
        epoch, document)
