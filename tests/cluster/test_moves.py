"""`bookcluster topology move`: a theatre changes home with everything it sold.

One dedicated cluster for the module (its ownership changes from test to test):
each test moves a theatre and checks what lives where afterwards, against the
stores themselves and the audit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest_asyncio

from cluster import moves
from cluster.audit import run_audit
from router.topology import load_topology
from tests.cluster.movable import epoch_of, movable_cluster, owner_rows, shows_of
from tests.conftest import Cluster
from tests.region_node.helpers import seats_of
from tests.support import bearer, call, captured_payment

SHOW_TABLES = ("show_seat", "booking", "booking_seat")


@pytest_asyncio.fixture(scope="module")
async def movable() -> AsyncIterator[Cluster]:
    async with movable_cluster("bookcluster-moves-") as cluster:
        yield cluster


async def hold(http: aiohttp.ClientSession, node: str, show: int, user: str,
               seats: list[str], key: str | None = None) -> tuple[int, Any]:
    headers = {"Idempotency-Key": key} if key else None
    return await call(http, "POST", f"{node}/booking/seats/{show}/lock", user=user,
                      json={"seat_ids": seats}, headers=headers)


async def sell(http: aiohttp.ClientSession, node: str, booking: dict[str, Any],
               key: str) -> tuple[int, Any]:
    payment = await captured_payment(http, booking)
    return await call(http, "POST", f"{node}/booking/booking/{booking['booking_id']}/confirm",
                      user=booking["user_id"], json={"payment_id": payment},
                      headers={"Idempotency-Key": key})


async def move(cluster: Cluster, theatre: str, target: str, **options: Any) -> list[str]:
    lines: list[str] = []
    code = await moves.move_command(cluster.topology, theatre, target, progress=lines.append,
                                    **options)
    assert code == 0, lines
    return lines


async def rows_of(cluster: Cluster, region: str, shows: list[int]) -> dict[str, int]:
    return {t: (await cluster.fetch(region, f"SELECT count(*) AS n FROM {t} "
                                    "WHERE show_id = ANY($1::bigint[])", shows))[0]["n"]
            for t in SHOW_TABLES}


async def audit_clean(cluster: Cluster) -> None:
    report = await run_audit(cluster.topology, grace_s=30)
    assert not report.violations and not report.unreachable, report.as_dict()


async def test_move_takes_sales_holds_and_keys_along(movable: Cluster, catalog: Any,
                                                     http: aiohttp.ClientSession) -> None:
    theatre, source, target = "delhi-01", "north", "south"
    shows = shows_of(catalog, theatre)
    show = shows[0]
    a, b, c, d = seats_of(catalog, show, 4)
    north, west = movable.node("north"), movable.node("west")
    status, sold = await hold(http, north, show, "alice", [a])
    assert status == 201, sold
    status, body = await sell(http, north, sold, "alice-1")
    assert status == 200, body
    status, held = await hold(http, west, show, "bob", [b], key="bob-hold")
    assert status == 201, held
    before = await rows_of(movable, source, shows)
    epoch = (await owner_rows(movable, theatre))[source][1]

    lines = await move(movable, theatre, target)

    owners = await owner_rows(movable, theatre)
    assert owners[source] == ("MOVED", epoch + 1, target), owners
    assert owners[target] == ("OWNED", epoch + 1, None), owners
    assert await rows_of(movable, target, shows) == before
    assert set((await rows_of(movable, source, shows)).values()) == {0}
    assert any("frozen for" in line for line in lines), lines
    topology = load_topology(movable.topology.path)
    assert topology.epoch == epoch + 1 and topology.theatres[theatre] == target
    for node in movable.nodes():
        assert await epoch_of(http, node) == epoch + 1

    # The sale is readable anywhere, at its new home; a replayed confirm is the same.
    status, got = await call(http, "GET", f"{west}/booking/booking/{sold['booking_id']}",
                             user="alice")
    assert status == 200 and got["status"] == "CONFIRMED" and got["region"] == target, got
    status, again = await call(http, "POST", f"{north}/booking/booking/"
                               f"{sold['booking_id']}/confirm", user="alice",
                               json={"payment_id": body["payment_id"]},
                               headers={"Idempotency-Key": "alice-1"})
    assert status == 200 and again == body, again
    # The live hold moved with its key and its TTL; it sells at the new home.
    status, replay = await hold(http, north, show, "bob", [b], key="bob-hold")
    assert status == 201 and replay["booking_id"] == held["booking_id"], replay
    assert replay["expires_at"] == held["expires_at"]
    status, seats = await call(http, "GET", f"{west}/shows/{show}/seats")
    by_seat = {s["seat_id"]: s["status"] for s in seats["seats"]}
    assert (by_seat[a], by_seat[b], by_seat[c]) == ("BOOKED", "LOCKED", "AVAILABLE"), seats
    status, _ = await hold(http, north, show, "carol", [a, c])
    assert status == 409, "a sold seat must stay sold after the move"
    status, body = await sell(http, north, held, "bob-1")
    assert status == 200, body
    status, new = await hold(http, north, show, "dave", [d])
    assert status == 201 and new["region"] == target, new
    await audit_clean(movable)


async def test_stale_node_is_redirected_and_corrects_itself(
        movable: Cluster, catalog: Any, http: aiohttp.ClientSession) -> None:
    """A node that missed the move (stopped while it ran) writes to the old owner, gets
    MOVED, adopts the new epoch from its own region's store and routes there: the
    client sees one normal answer."""
    theatre, target = "mumbai-01", "north"
    show = shows_of(catalog, theatre)[0]
    stale = movable.launcher.child("west.node.1")
    node = movable.node("west", 0)
    epoch = await epoch_of(http, node)
    assert epoch is not None
    stale.popen.send_signal(19)  # SIGSTOP: it cannot take the new epoch
    try:
        lines = await move(movable, theatre, target)
    finally:
        stale.popen.send_signal(18)  # SIGCONT
    assert any("west.node.1" in line and "did not take it" in line for line in lines), lines
    assert await epoch_of(http, node) == epoch  # still the old map
    status, body = await hold(http, node, show, "erin", seats_of(catalog, show, 1))
    assert status == 201 and body["region"] == target, body
    assert await epoch_of(http, node) == epoch + 1
    await audit_clean(movable)


async def test_move_back_and_forth_keeps_everything(movable: Cluster, catalog: Any,
                                                    http: aiohttp.ClientSession) -> None:
    theatre = "chennai-01"
    show = shows_of(catalog, theatre)[1]
    seats = seats_of(catalog, show, 2)
    node = movable.node("south")
    status, booking = await hold(http, node, show, "frank", seats[:1])
    assert status == 201
    status, body = await sell(http, node, booking, "frank-1")
    assert status == 200, body
    await move(movable, theatre, "west")
    await move(movable, theatre, "south")
    status, got = await call(http, "GET", f"{node}/booking/booking/{booking['booking_id']}",
                             user="frank")
    assert status == 200 and got["status"] == "CONFIRMED" and got["region"] == "south"
    status, _ = await hold(http, movable.node("west"), show, "gina", seats)
    assert status == 409
    started = time.monotonic()
    while time.monotonic() - started < 10:  # the ticket job ran at one home or the other
        async with http.get(f"{node}/booking/booking/{booking['booking_id']}/ticket",
                            headers=bearer("frank")) as resp:
            status, kind = resp.status, resp.content_type
        if status == 200:
            break
        await asyncio.sleep(0.2)
    assert status == 200 and kind == "image/png"
    await audit_clean(movable)
