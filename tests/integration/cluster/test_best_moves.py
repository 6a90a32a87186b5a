"""Best-available holds keep working while their theatre moves to another region: every
201 is at the new home with exactly its seats, no seat is held twice, and the new home's
master chooses from the layout it gets (written on first use, repaired by its worker)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest_asyncio

from tests.integration.cluster.movable import movable_cluster, owner_rows, shows_of
from tests.integration.cluster.test_moves import audit_clean, move
from tests.integration.conftest import Cluster
from tests.integration.node.test_best import best_hold


@pytest_asyncio.fixture(scope="module")
async def movable() -> AsyncIterator[Cluster]:
    async with movable_cluster("bookcluster-best-moves-") as cluster:
        yield cluster


async def _best(http: aiohttp.ClientSession, nodes: list[str], show: int, i: int,
                count: int) -> tuple[int, Any]:
    """One best-available request, retried under its key while the move refuses it."""
    for attempt in range(60):
        status, body = await best_hold(http, nodes[(i + attempt) % len(nodes)], show,
                                       f"mover-{i}", {"count": count}, key=f"mover-{i}")
        if status not in (421, 429, 503):
            return status, body
        await asyncio.sleep(0.1)
    return status, body


async def test_best_available_across_a_move(movable: Cluster, catalog: Any,
                                            http: aiohttp.ClientSession) -> None:
    theatre = "gurugram-01"
    show = shows_of(catalog, theatre)[0]
    owners = await owner_rows(movable, theatre)
    source = next(r for r, (state, _, _) in owners.items() if state == "OWNED")
    target = next(r for r in movable.topology.regions if r != source)
    screen = next(s.screen_id for s in catalog.shows if s.id == show)
    seats = sum(1 for s in catalog.seats if s.screen_id == screen and not s.blocked)
    rng = random.Random(7)
    counts = [rng.randint(1, 3) for _ in range(120)]
    while sum(counts) > seats // 2:  # the show never sells out: every request holds
        counts = [max(1, c - 1) if i % 2 else c for i, c in enumerate(counts)]
        if sum(counts) > seats // 2:
            counts = counts[: len(counts) - 8]
    waves = 4
    per_wave = len(counts) // waves
    counts = counts[: per_wave * waves]
    nodes = movable.nodes()

    async def rush() -> list[tuple[int, Any]]:
        results = []
        for wave in range(waves):  # before, during and after the move
            results += await asyncio.gather(*(
                _best(http, nodes, show, i, counts[i])
                for i in range(wave * per_wave, (wave + 1) * per_wave)))
            await asyncio.sleep(0.5)
        return results

    async def mover() -> None:
        await asyncio.sleep(0.7)
        await move(movable, theatre, target)

    results, _ = await asyncio.gather(rush(), mover())
    assert (await owner_rows(movable, theatre))[target][0] == "OWNED"
    holds = {}
    for count, (status, body) in zip(counts, results, strict=True):
        assert status == 201 and len(body["seats"]) == count, body
        holds[body["booking_id"]] = body["seats"]
    chosen = [s for seats in holds.values() for s in seats]
    assert len(chosen) == len(set(chosen)) > 0
    rows = await movable.fetch(target, "SELECT seat_id, hold_booking_id FROM show_seat "
                               "WHERE show_id = $1 AND status = 'LOCKED'", show)
    assert {r["seat_id"]: r["hold_booking_id"] for r in rows} == {
        s: b for b, seats in holds.items() for s in seats}
    # After the move, the new home chooses and holds.
    status, body = await best_hold(http, movable.node(source), show, "after-move",
                                   {"count": 2})
    assert status == 201 and body["region"] == target, body
    await audit_clean(movable)
