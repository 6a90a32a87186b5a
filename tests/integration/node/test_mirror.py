"""The Redis seat mirror follows PostgreSQL: through a master outage, and a master that
came back empty (the session cluster's masters keep no AOF: `durable: false`)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bookcluster.local import faults
from bookcluster.ops.audit import run_audit
from bookcluster.seats import keys
from bookcluster.seats.home import HomeRegion
from bookcluster.seats.reconcile import MARGIN, SETTLE, Reconciler
from bookcluster.seats.scripts import REPAIR
from bookcluster.stores.connections import Connections, make_master
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_holds import confirm, hold
from tests.integration.support import call, paid

CONVERGE_S = 5.0


async def pg_map(cluster: Cluster, region: str, show: int) -> dict[str, str]:
    rows = await cluster.fetch(
        region, "SELECT seat_id, CASE WHEN status = 'LOCKED' AND hold_expires_at <= now() "
        "THEN 'AVAILABLE' ELSE status END AS status FROM show_seat WHERE show_id = $1", show)
    return {r["seat_id"]: r["status"] for r in rows}


async def node_map(http: aiohttp.ClientSession, node: str, show: int) -> dict[str, str]:
    status, body = await call(http, "GET", f"{node}/shows/{show}/seats")
    assert status == 200, body
    return {s["seat_id"]: s["status"] for s in body["seats"]}


async def converged(cluster: Cluster, http: aiohttp.ClientSession, region: str,
                    shows: list[int]) -> float:
    """Seconds until every node's seat map of `shows` equals PostgreSQL's."""
    started = time.monotonic()
    while True:
        mismatched = []
        for show in shows:
            truth = await pg_map(cluster, region, show)
            for node in cluster.nodes():
                if await node_map(http, node, show) != truth:
                    mismatched.append((show, node))
        if not mismatched:
            return time.monotonic() - started
        assert time.monotonic() - started < CONVERGE_S + 5, mismatched[:3]
        await asyncio.sleep(0.2)


async def test_a_sale_while_redis_is_down_reaches_every_node(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "south")[0]
    seats = seats_of(catalog, show, 2)
    _, held = await hold(http, clean.node("north"), show, "ria", seats)
    await paid(http, clean.node("north"), held["booking_id"], "p")
    for node in clean.nodes():  # every node caches the show with its hold
        seat_map = await node_map(http, node, show)
        assert {seat_map[s] for s in seats} == {"LOCKED"}
    with faults.paused(clean.launcher.child("south.redis.master").pid):
        status, body = await confirm(http, clean.node("west"), held["booking_id"], "k", "p")
        assert status == 200 and body["status"] == "CONFIRMED"  # PostgreSQL sold it
        await asyncio.sleep(1.0)
        resumed = time.monotonic()
    took = await converged(clean, http, "south", [show])
    assert took <= CONVERGE_S
    print(f"sold while south's Redis was stopped: every node shows BOOKED "
          f"{time.monotonic() - resumed:.2f} s after it resumed")
    rows = await clean.fetch("south", "SELECT count(*) AS n FROM mirror_change "
                             "WHERE applied_at IS NULL")
    await asyncio.sleep(1.0)
    rows = await clean.fetch("south", "SELECT count(*) AS n FROM mirror_change "
                             "WHERE applied_at IS NULL")
    assert rows[0]["n"] == 0  # the worker applied (and marked) the change too


async def test_a_master_that_came_back_empty_is_repaired(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    region = "west"
    shows = shows_in(clean, catalog, region)[:2]
    name = f"{region}.redis.master"
    stop = asyncio.Event()
    outcomes: list[tuple[int, str]] = []

    async def customer(i: int) -> None:
        show = shows[i % 2]
        seat_pool = seats_of(catalog, show, 60)
        n = 0
        while not stop.is_set() and n < 40:
            seat = seat_pool[(i * 7 + n) % len(seat_pool)]
            user = f"c{i}-{n}"
            status, body = await hold(http, clean.nodes()[(i + n) % 6], show, user, [seat])
            outcomes.append((status, seat))
            if status == 201 and n % 2 == 0:
                await confirm(http, clean.nodes()[n % 6], body["booking_id"], f"k{n}", "p")
            n += 1
            await asyncio.sleep(0.05)

    customers = [asyncio.create_task(customer(i)) for i in range(6)]
    await asyncio.sleep(1.5)
    faults.signal_tree(clean.launcher.child(name).pid, signal.SIGKILL)
    await asyncio.sleep(0.5)
    await clean.launcher.restart(name)  # no AOF: it comes back empty
    returned = time.monotonic()
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*customers)
    assert {s for s, _ in outcomes} <= {201, 409, 503}, outcomes
    took = await converged(clean, http, region, shows)
    print(f"{region}'s master restarted empty: every node equals PostgreSQL "
          f"{time.monotonic() - returned:.2f} s after its return")
    assert time.monotonic() - returned <= CONVERGE_S + 1.0 + took
    # No hold was ever recorded on a seat PostgreSQL had sold (PostgreSQL decides).
    doubles = await clean.fetch(
        region, "SELECT sold.show_id, sold.seat_id FROM booking_seat sold "
        "JOIN booking sb ON sb.id = sold.booking_id AND sb.status = 'CONFIRMED' "
        "JOIN booking_seat other ON other.show_id = sold.show_id "
        "AND other.seat_id = sold.seat_id AND other.booking_id <> sold.booking_id "
        "JOIN booking ob ON ob.id = other.booking_id WHERE ob.created_at > sb.updated_at")
    assert not doubles
    report = await run_audit(clean.topology, grace_s=5.0)
    assert not report.violations, report.violations[:5]


async def test_a_repair_leaves_a_seat_that_changed_since_the_pass_read_it(
        clean: Cluster, catalog: Any) -> None:
    """The reconciler's REPAIR is a compare-and-set: a seat whose Redis state is no
    longer what the pass read (a sale or release landed in between) is left to the next
    pass, so a repair never undoes a change it did not see."""
    show = shows_in(clean, catalog, "south")[1]
    seat = seats_of(catalog, show, 1)[0]
    master = make_master(clean.topology, "south")
    repair = master.register_script(REPAIR)
    show_keys, head = keys.show_keys(show), [keys.SEAT_CHANGES_CHANNEL, show, 0]
    try:
        # The pass read the seat held by b-x (since sold or freed: it is free now).
        _, changed = await repair(keys=show_keys, args=[*head, seat, "H:b-x|1", "B:b-y"])
        assert changed == 0
        assert await master.hget(keys.show_booked(show), seat) is None
        _, changed = await repair(keys=show_keys, args=[*head, seat, "A", "U"])
        assert changed == 1 and await master.sismember(keys.show_blocked(show), seat)
    finally:
        await repair(keys=show_keys, args=[*head, seat, "U", "A"])
        blocked = await master.sismember(keys.show_blocked(show), seat)
        await master.aclose()
    assert not blocked


async def test_a_change_committed_late_by_a_transaction_older_than_the_watermark_is_repaired(
        clean: Cluster, catalog: Any) -> None:
    """Between full passes the reconciler reads only bookings changed since its watermark.
    `updated_at` is when the writing transaction *started*: one that started before a
    pass and commits after it must still be in a later pass's window. Here a sale is
    committed (without a mirror row, so only the reconciler can bring it to Redis) by a
    transaction that was open across an incremental pass. The region's worker is paused
    (SIGSTOP), so no other reconciler repairs it."""
    region = "south"
    show = shows_in(clean, catalog, region)[0]
    seat = seats_of(catalog, show, 1)[0]
    booking = "b-late-commit-0001"
    master = make_master(clean.topology, region)
    writer = await clean.pg(region)
    try:
        with faults.paused(clean.launcher.child(f"{region}.worker").pid):
            async with Connections(clean.topology, region) as connections:
                reconciler = Reconciler(connections, HomeRegion(connections), region)
                await reconciler.run_once()  # the first pass compares every show
                async with writer.transaction():
                    started = await writer.fetchval("SELECT now()")
                    await asyncio.sleep((SETTLE + MARGIN).total_seconds() + 0.5)
                    report = await reconciler.run_once()  # only what changed
                    assert report.shows_checked == 0
                    assert reconciler.watermark is not None and reconciler.watermark < started
                    await writer.execute(
                        "INSERT INTO booking (id, user_id, show_id, status, fence_token, "
                        "amount_paise, expires_at, hold_deadline) VALUES ($1, 'late', $2, "
                        "'CONFIRMED', nextval('fence_token_seq'), 100, now(), now())",
                        booking, show)
                    await writer.execute(
                        "INSERT INTO booking_seat (booking_id, show_id, seat_id, price_paise, "
                        "sold) VALUES ($1, $2, $3, 100, true)", booking, show, seat)
                    await writer.execute(
                        "UPDATE show_seat SET status = 'BOOKED', booked_booking_id = $1, "
                        "updated_at = now() WHERE show_id = $2 AND seat_id = $3",
                        booking, show, seat)
                assert await master.hget(keys.show_booked(show), seat) is None
                report = await reconciler.run_once()
                assert report.divergent == {show: {seat: f"B:{booking}"}}
                assert await master.hget(keys.show_booked(show), seat) == booking
                assert (await reconciler.run_once()).divergent == {}  # and it stays repaired
    finally:
        await writer.close()
        await master.aclose()


def test_repair_command_reports_and_fixes(cluster: Cluster) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bookcluster", "--topology", str(cluster.topology.path), "repair",
         "--region", "north", "--dry-run"],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("north: ") and "shows checked" in done.stdout
