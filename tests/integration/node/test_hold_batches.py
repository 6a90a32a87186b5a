"""Hold records coalesced per loop turn (`bc_record_holds`, `booking/batches.py`):
per-item outcomes, one global lock order, and the audit clean under many overlapping
holds at once."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg

from bookcluster.booking import ledger
from bookcluster.ops.audit import run_audit
from bookcluster.stores.connections import pg_dsn, pg_login
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_holds import hold

CAPS = ledger.HoldCaps(max_hold=timedelta(minutes=30), max_seats=10, max_holds=2,
                       max_address_seats=100, max_address_holds=100)


def item(show: int, seats: list[str], booking: str, user: str, *, key: str | None = None,
         epoch: int | None = None) -> ledger.HoldItem:
    return ledger.HoldItem(show=show, seats=sorted(seats), booking=booking, user=user,
                           expires=datetime.now(UTC) + timedelta(minutes=5),
                           prices=[100] * len(seats), hold_key=key, epoch=epoch, address=None)


async def test_a_batch_answers_each_item_and_writes_only_the_recorded(
        clean: Cluster, catalog: Any) -> None:
    show, other = shows_in(clean, catalog, "west")[:2]
    s = seats_of(catalog, show, 12)
    conn = await clean.pg("west")
    try:
        # Before the batch: carol holds s0 and s1 (a hold key), dave holds two other holds.
        first = await ledger.record_holds(conn, [
            item(show, [s[0], s[1]], "b-carol", "carol", key="k1"),
            item(other, [s[0]], "b-dave-1", "dave"),
            item(other, [s[1]], "b-dave-2", "dave")], CAPS)
        assert all(r.token is not None for r in first), first
        epoch = await conn.fetchval("SELECT max(epoch) FROM theatre_owner")
        records = await ledger.record_holds(conn, [
            item(show, [s[2], s[3]], "b-alice", "alice"),  # recorded
            item(show, [s[1], s[4]], "b-bob", "bob"),  # s1 is carol's: refused
            item(show, [s[5]], "b-dave-3", "dave"),  # dave's third hold: capped
            item(show, [s[6]], "b-carol-again", "carol", key="k1"),  # replayed
            item(show, [s[7]], "b-erin", "erin", epoch=epoch - 1 if epoch > 1 else 0),
            item(show, [s[3], s[8]], "b-frank", "frank"),  # s3 taken by alice above
            item(show, [s[9]], "b-alice-2", "alice"),  # alice's second: recorded
        ], CAPS)
    finally:
        await conn.close()
    alice, bob, dave, carol, erin, frank, alice2 = records
    assert alice.token is not None and not alice.refused and alice.fence is None
    assert alice2.token is not None and alice2.token > alice.token
    assert bob.token is None and bob.refused == [s[1]] and bob.limit_hit is None
    assert dave.token is None and dave.limit_hit == "holds_per_user" and not dave.refused
    assert carol.token is None and carol.replayed and carol.limit_hit is None
    assert erin.token is None and erin.fence == "bc_moved" and erin.fence_detail == f" {epoch}"
    assert frank.token is None and frank.refused == [s[3]]
    written = await clean.fetch(
        "west", "SELECT id, fence_token FROM booking WHERE id LIKE 'b-%' ORDER BY id")
    assert {r["id"]: r["fence_token"] for r in written} == {
        "b-alice": alice.token, "b-alice-2": alice2.token, "b-carol": first[0].token,
        "b-dave-1": first[1].token, "b-dave-2": first[2].token}
    seats = await clean.fetch(
        "west", "SELECT seat_id, hold_booking_id, fence_token FROM show_seat "
        "WHERE show_id = $1 AND status = 'LOCKED' ORDER BY seat_id", show)
    assert {r["seat_id"]: (r["hold_booking_id"], r["fence_token"]) for r in seats} == {
        s[0]: ("b-carol", first[0].token), s[1]: ("b-carol", first[0].token),
        s[2]: ("b-alice", alice.token), s[3]: ("b-alice", alice.token),
        s[9]: ("b-alice-2", alice2.token)}


async def test_overlapping_batches_and_single_holds_never_deadlock(
        clean: Cluster, catalog: Any) -> None:
    """Batches of random size over two shows' hot seats, in every order, with single
    holds, sales and cancels between them: no deadlock, no seat held twice, every
    locked seat carries its booking's token."""
    shows = shows_in(clean, catalog, "south")[:2]
    hot = {show: seats_of(catalog, show, 12) for show in shows}
    rng = random.Random(22)
    region = clean.topology.region("south")
    pool = await asyncpg.create_pool(pg_dsn(region.pg_primary), **pg_login(clean.topology.secrets),
                                     min_size=4, max_size=12)
    counter = iter(range(10**6))

    def random_item() -> ledger.HoldItem:
        n = next(counter)
        show = rng.choice(shows)
        return item(show, rng.sample(hot[show], rng.randint(1, 4)), f"c-{n}",
                    f"user-{rng.randint(0, 40)}")

    async def one(i: int) -> list[ledger.HoldRecord]:
        async with pool.acquire() as conn:
            if i % 5 == 0:
                it = random_item()
                return [await ledger.record_item(conn, it, CAPS)]
            if i % 7 == 0:  # the sweeper's order: booking row, then its seats (bc_release)
                async with conn.transaction():
                    lapsed = await conn.fetchval(
                        "SELECT id FROM booking WHERE id = $1 AND status = 'INITIATED' "
                        "FOR UPDATE SKIP LOCKED", f"c-{rng.randint(0, i)}")
                    await ledger.expire(conn, [lapsed] if lapsed else [])
                return []
            batch = [random_item() for _ in range(rng.randint(2, 12))]
            rng.shuffle(batch)
            return await ledger.record_holds(conn, batch, CAPS)

    try:
        # 300 calls, at most 12 at once (the pool): bounded, overlapping throughout.
        results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(300))), 120)
    finally:
        await pool.close()
    recorded = [r for rs in results for r in rs if r.token is not None]
    assert recorded, "nothing was recorded"
    locked = await clean.fetch(
        "south", "SELECT ss.show_id, ss.seat_id, ss.fence_token, b.fence_token AS booked "
        "FROM show_seat ss JOIN booking b ON b.id = ss.hold_booking_id "
        "WHERE ss.status = 'LOCKED'")
    assert all(r["fence_token"] == r["booked"] for r in locked)
    claims = await clean.fetch(
        "south", "SELECT bs.show_id, bs.seat_id, count(*) AS n FROM booking_seat bs "
        "JOIN booking b ON b.id = bs.booking_id WHERE b.status = 'INITIATED' "
        "GROUP BY 1, 2 HAVING count(*) > 1")
    assert claims == []
    caps = await clean.fetch(
        "south", "SELECT user_id, count(*) AS n FROM booking WHERE status = 'INITIATED' "
        "GROUP BY 1 HAVING count(*) > $1", CAPS.max_holds)
    assert caps == []


async def test_many_concurrent_holds_through_the_nodes(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    """400 overlapping holds at once (bounded to 100 in flight) through every north
    node, which batch their records: each seat held once, every 201 recorded with its
    token, and the audit clean."""
    show = shows_in(clean, catalog, "north")[0]
    hot = seats_of(catalog, show, 60)
    nodes = clean.nodes("north")
    rng = random.Random(2222)
    gate = asyncio.Semaphore(100)

    async def one(i: int) -> tuple[int, Any]:
        async with gate:
            return await hold(http, nodes[i % len(nodes)], show, f"crowd-{i}",
                              rng.sample(hot, rng.randint(1, 3)))

    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(400))), 120)
    statuses = [s for s, _ in results]
    assert set(statuses) <= {201, 409}, [b for s, b in results if s not in (201, 409)][:3]
    held = {b["booking_id"]: b for s, b in results if s == 201}
    claimed = [seat for b in held.values() for seat in b["seat_ids"]]
    assert held and len(claimed) == len(set(claimed))
    rows = await clean.fetch(
        "north", "SELECT b.id, b.fence_token, array_agg(ss.seat_id ORDER BY ss.seat_id) "
        "AS seats FROM booking b JOIN show_seat ss ON ss.hold_booking_id = b.id "
        "AND ss.fence_token = b.fence_token WHERE b.show_id = $1 AND b.status = 'INITIATED' "
        "GROUP BY b.id", show)
    assert {r["id"]: (r["fence_token"], list(r["seats"])) for r in rows} == {
        k: (b["hold_token"], b["seat_ids"]) for k, b in held.items()}
    report = await run_audit(clean.topology)
    assert report.violations == [] and report.unreachable == {}, report
