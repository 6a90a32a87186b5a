"""The one writer of a show's layout at its home master (`keys.show_layout`), which the
BEST script chooses from: derived from the catalog in PostgreSQL (seat rows, positions,
categories, accessible spaces, the screen's focal point), written on first use (the
script answers that it is missing) and compared and repaired by the reconciler on
every full pass. A hash {json, digest}: the script reads `json`, the reconciler
compares `digest` (a few bytes, not the layout)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import asyncpg
import redis.asyncio as aioredis

from bookcluster.catalog import Catalog, SeatInfo, ShowInfo
from bookcluster.seats import best, keys

JSON, DIGEST = "json", "digest"


def digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class Layouts:
    """Screens' layouts from the node's catalog, each built once (the catalog keeps a
    screen's seats for the node's life)."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._built: dict[str, best.Layout] = {}
        self._encoded: dict[str, str] = {}

    async def of_show(self, show: ShowInfo) -> best.Layout:
        layout = self._built.get(show.screen_id)
        if layout is None:
            screen = await self._catalog.screen(show.screen_id)
            layout = best.layout_of(await self._catalog.layout(show.screen_id),
                                    screen.focal_row, screen.focal_seat)
            self._built[show.screen_id] = layout
        return layout

    async def encoded(self, show: ShowInfo) -> str:
        text = self._encoded.get(show.screen_id)
        if text is None:
            text = self._encoded[show.screen_id] = (await self.of_show(show)).encode()
        return text


async def write(client: aioredis.Redis, show_ids: Iterable[int], text: str) -> None:
    """Put `text` (`best.Layout.encode`) as the layout of these shows (one screen's)."""
    mark = digest(text)
    async with client.pipeline(transaction=False) as pipe:
        for show_id in show_ids:
            pipe.hset(keys.show_layout(show_id), mapping={JSON: text, DIGEST: mark})
        await pipe.execute()


async def from_postgres(conn: asyncpg.Connection, show_ids: list[int]) -> dict[int, str]:
    """The layouts (encoded) of these shows as PostgreSQL's catalog says: what the
    reconciler holds the master to."""
    shows = await conn.fetch(
        "SELECT sh.id, sh.screen_id, sc.focal_row, sc.focal_seat FROM show sh "
        "JOIN screen sc ON sc.id = sh.screen_id WHERE sh.id = ANY($1::bigint[])", show_ids)
    screens = sorted({r["screen_id"] for r in shows})
    seats: dict[str, list[SeatInfo]] = {s: [] for s in screens}
    for r in await conn.fetch(
            "SELECT screen_id, seat_id, row_label, number, category, price_paise, blocked, "
            "coalesce(position, number) AS position, accessible FROM seat "
            "WHERE screen_id = ANY($1::text[])", screens):
        seats[r["screen_id"]].append(SeatInfo(
            r["seat_id"], r["row_label"], r["number"], r["category"], r["price_paise"],
            r["blocked"], r["position"], r["accessible"]))
    texts: dict[str, str] = {}
    for r in shows:
        if r["screen_id"] not in texts:
            focal_seat = None if r["focal_seat"] is None else float(r["focal_seat"])
            texts[r["screen_id"]] = best.layout_of(
                seats[r["screen_id"]], r["focal_row"], focal_seat).encode()
    return {r["id"]: texts[r["screen_id"]] for r in shows}


async def repair(conn: asyncpg.Connection, master: aioredis.Redis, show_ids: list[int],
                 dry_run: bool = False) -> list[int]:
    """Write the layout of every show in `show_ids` whose master copy is missing or
    differs from PostgreSQL's catalog. Returns the shows repaired (or, dry, to repair)."""
    if not show_ids:
        return []
    wanted = await from_postgres(conn, show_ids)
    async with master.pipeline(transaction=False) as pipe:
        for show_id in show_ids:
            pipe.hget(keys.show_layout(show_id), DIGEST)
        have = await pipe.execute()
    wrong = [s for s, d in zip(show_ids, have, strict=True)
             if s in wanted and d != digest(wanted[s])]
    if not dry_run:
        for show_id in wrong:
            await write(master, [show_id], wanted[show_id])
    return wrong
