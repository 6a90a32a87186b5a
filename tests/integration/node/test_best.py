"""Best-available seats (`POST /booking/seats/{show_id}/best`): the BEST script chooses as
the rule (`seats/best.py`) on a real Redis, and a rush of best-available requests sells a
1,000-seat show out with no double hold and every choice the rule's."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import aiohttp

from bookcluster.catalog import SeatInfo
from bookcluster.seats import best, keys
from bookcluster.seats import layout as seat_layout
from bookcluster.seats.home import HomeRegion
from bookcluster.seats.reconcile import Reconciler
from bookcluster.seats.scripts import SeatScripts
from bookcluster.stores.connections import Connections, make_master, make_redis
from tests.integration.conftest import Cluster
from tests.integration.node.best_show import BestShow, best_show
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_availability import paused
from tests.integration.node.test_holds import hold
from tests.integration.support import call
from tests.unit.seats.best_reference import random_layout

RUSH = 500
OTHER = "b1-someone"
FAR = 4_102_444_800_000  # a deadline (unix ms, 2100) no script starts after


async def best_hold(http: aiohttp.ClientSession, node: str, show: int, user: str,
                    body: Any, key: str | None = None) -> tuple[int, Any]:
    headers = {"Idempotency-Key": key} if key else None
    return await call(http, "POST", f"{node}/booking/seats/{show}/best", user=user,
                      json=body, headers=headers)


def layout_of(seats: list[Any], focal_row: str | None) -> best.Layout:
    """The rule's layout of demo catalog seats."""
    return best.layout_of([SeatInfo(s.seat_id, s.row_label, s.number, s.category,
                                    s.price_paise, s.blocked, s.position, s.accessible)
                           for s in seats], focal_row)


async def test_the_script_chooses_as_the_rule_does(cluster: Cluster) -> None:
    """Random small screens and occupancies (live and lapsed holds, sales, blocked seats):
    the BEST script holds exactly the seats `best.choose` picks, or refuses when it
    picks none."""
    rng = random.Random(23)
    client = make_redis(cluster.topology.region("north").redis_master,
                        cluster.topology.secrets)
    scripts = SeatScripts()
    show = 8_800_000 + rng.randrange(100_000)  # no such show in PostgreSQL: Redis only
    show_keys = [*keys.show_keys(show), keys.show_layout(show)]
    held = refused = 0
    try:
        for case in range(400):
            layout = random_layout(rng, max_rows=5, max_seats=12)
            await client.delete(*show_keys)
            await seat_layout.write(client, [show], layout.encode())
            now = int(time.time() * 1000)
            free = set()
            holds = keys.show_holds(show)
            for place in (p for row in layout.rows for p in row):
                x = rng.random()
                if x < 0.15:
                    await client.hset(holds, place.seat_id, f"{OTHER}|{now + 60_000}")
                elif x < 0.2:  # a lapsed hold: free
                    await client.hset(holds, place.seat_id, f"{OTHER}|{now - 1}")
                    free.add(place.seat_id)
                elif x < 0.27:
                    await client.hset(keys.show_booked(show), place.seat_id, OTHER)
                elif x < 0.3:
                    await client.sadd(keys.show_blocked(show), place.seat_id)
                else:
                    free.add(place.seat_id)
            count = rng.randint(1, 5)
            category = rng.choice([None, None, "a"])
            accessible = rng.random() < 0.1
            split = rng.random() < 0.25
            result = await scripts.run(client, "best", show_keys, [
                keys.SEAT_CHANGES_CHANNEL, show, f"b{show}-case{case}", 60_000, 1, FAR, count,
                category or "", int(accessible), int(split)])
            want = best.choose(layout, free, count, category=category,
                               accessible=accessible, allow_split=split)
            if want is None:
                assert int(result[0]) == 0, (case, layout, free, count, result)
                refused += 1
            else:
                assert int(result[0]) == 1, (case, layout, free, count, want)
                assert tuple(sorted(result[3:])) == want.seats, (case, layout, free, count)
                held += 1
        assert held > 150 and refused > 20  # both answers were compared
        # The same booking asking again (a retry under its Idempotency-Key) gets the
        # seats it holds, never a second block.
        again = await scripts.run(client, "best", show_keys, [
            keys.SEAT_CHANGES_CHANNEL, show, f"b{show}-case399", 60_000, 1, FAR, 1, "", 0, 1])
        mine = [s for s, v in (await client.hgetall(keys.show_holds(show))).items()
                if str(v).startswith(f"b{show}-case399|")]
        if mine:
            assert sorted(again[3:]) == sorted(mine)
        # Started after its deadline: changes nothing, says so (-4) before any other
        # answer (the layout is there, seats are free).
        version = await client.get(keys.show_version(show))
        late = await scripts.run(client, "best", show_keys, [
            keys.SEAT_CHANGES_CHANNEL, show, f"b{show}-late", 60_000, 1,
            int(time.time() * 1000) - 1, 1, "", 0, 1])
        assert int(late[0]) == -4 and int(late[1]) >= time.time() * 1000 - 5_000, late
        assert await client.get(keys.show_version(show)) == version
        assert not [v for v in (await client.hgetall(keys.show_holds(show))).values()
                    if str(v).startswith(f"b{show}-late|")]
        # No layout on the master: the script says so and changes nothing.
        await client.delete(keys.show_layout(show))
        assert [int(x) for x in await scripts.run(client, "best", show_keys, [
            keys.SEAT_CHANGES_CHANNEL, show, f"b{show}-none", 60_000, 1, FAR, 1, "", 0, 0])] == [-3]
    finally:
        await client.delete(*show_keys)
        await client.aclose()


async def test_best_available_holds_what_the_rule_chooses(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "west")[0]
    screen = next(s for s in catalog.shows if s.id == show).screen_id
    layout = layout_of([s for s in catalog.seats if s.screen_id == screen],
                       next(s.focal_row for s in catalog.screens if s.id == screen))
    free = {s.seat_id for s in catalog.seats if s.screen_id == screen and not s.blocked}
    node = clean.node("north")  # another region's node forwards it home
    status, first = await best_hold(http, node, show, "best-ann", {"count": 3}, key="best-1")
    assert status == 201, first
    want = best.choose(layout, free, 3)
    assert want is not None and first["seats"] == first["seat_ids"] == list(want.seats)
    assert first["region"] == "west" and first["status"] == "INITIATED"
    rows = await clean.fetch("west", "SELECT seat_id FROM show_seat WHERE show_id = $1 AND "
                             "status = 'LOCKED' AND hold_booking_id = $2 ORDER BY seat_id",
                             show, first["booking_id"])
    assert [r["seat_id"] for r in rows] == first["seats"]

    # A retry under the same key: the same hold, never a second block.
    status, again = await best_hold(http, clean.node("west"), show, "best-ann", {"count": 3},
                                    key="best-1")
    assert status == 201 and again["booking_id"] == first["booking_id"]
    assert again["seats"] == first["seats"]
    # The next best block for someone else, chosen around the first.
    status, second = await best_hold(http, node, show, "best-bob", {"count": 2})
    assert status == 201, second
    want = best.choose(layout, free - set(first["seats"]), 2)
    assert want is not None and second["seats"] == list(want.seats)

    status, body = await best_hold(http, node, show, "best-cy",
                                   {"count": 2, "category": "NO-SUCH-CATEGORY"})
    assert status == 409 and body["error"] == "no_block_available", body
    for bad in ({"count": 0}, {"count": 2, "colour": "red"}, {"count": "2"}, [2]):
        status, body = await best_hold(http, node, show, "best-cy", bad)
        assert status == 422 and body["error"] == "invalid_input", (bad, body)
    held = await clean.fetch("west", "SELECT count(*) AS n FROM booking WHERE show_id = $1",
                             show)
    assert held[0]["n"] == 2


async def test_a_script_that_runs_after_its_deadline_holds_nothing(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    """The home master paused while a hold (then a best-available hold) waits on it: the
    node answers 503 at the deadline; when the master wakes, it runs the script (it was
    sent), which holds nothing and publishes nothing. One request a pause: the node's
    next connection could not even log in to a paused master."""
    region = "south"
    show = shows_in(clean, catalog, region)[0]
    node = clean.node(region)
    free = seats_of(catalog, show)
    master = make_master(clean.topology, region)
    held: list[str] = []
    try:
        for kind in ("hold", "best"):
            # One of the kind first: the layout is on the master, the script loaded there,
            # and the node has a connection logged in.
            if kind == "hold":
                status, body = await hold(http, node, show, "late-0", free[-1:])
            else:
                status, body = await best_hold(http, node, show, "late-0", {"count": 1})
            assert status == 201, body
            held += body["seat_ids"]
            stats = await master.info("commandstats")
            calls = int(stats["cmdstat_evalsha"]["calls"])
            version = await master.get(keys.show_version(show))
            with paused(clean, f"{region}.redis.master"):
                if kind == "hold":
                    status, body = await hold(http, node, show, "late-1", free[:2])
                else:
                    status, body = await best_hold(http, node, show, "late-2", {"count": 2})
                assert status == 503 and body["error"] == "region_unavailable", body
                await asyncio.sleep(0.3)  # well past the deadline
            await asyncio.sleep(1.0)  # the master runs what was sent while it slept
            stats = await master.info("commandstats")
            assert int(stats["cmdstat_evalsha"]["calls"]) >= calls + 1, kind  # it ran
            holds = await master.hgetall(keys.show_holds(show))
            assert sorted(holds) == sorted(held), (kind, holds)  # only the holds before
            assert await master.get(keys.show_version(show)) == version, kind
        rows = await clean.fetch(region, "SELECT count(*) AS n FROM booking "
                                 "WHERE show_id = $1", show)
        assert rows[0]["n"] == 2
    finally:
        await master.aclose()


async def _collect(pubsub: Any, into: list[dict[str, Any]], stop: asyncio.Event) -> None:
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None:
            into.append(json.loads(message["data"]))
        elif stop.is_set():
            return


async def _rush_one(http: aiohttp.ClientSession, nodes: list[str], show: int, i: int,
                    count: int) -> tuple[int, Any]:
    """One best-available request; retried under its key when shed or rate limited."""
    for attempt in range(20):
        status, body = await best_hold(http, nodes[(i + attempt) % len(nodes)], show,
                                       f"rush-{i}", {"count": count}, key=f"rush-{i}")
        if status not in (429, 503):
            return status, body
        await asyncio.sleep(0.2)
    return status, body


def _replay(layout: best.Layout, free: set[str],
            events: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Replay the master's seat changes in version order: each new hold is the block the
    rule chooses from the seats free just before it (a hold PostgreSQL did not record is
    released again). Returns the holds that stand at the end, booking -> seats."""
    holding: dict[str, list[str]] = {}
    for event in sorted(events, key=lambda e: e["version"]):
        seats = sorted(event["seats"])
        if event["status"] == "LOCKED":
            if holding.get(event["booking"]) == seats:
                continue  # a retry re-held its own seats
            want = best.choose(layout, free, len(seats))
            assert want is not None and list(want.seats) == seats, (event, want)
            holding[event["booking"]] = seats
            free -= set(seats)
        elif event["status"] == "AVAILABLE":
            free |= set(seats)
            left = [s for s in holding.get(event["booking"], []) if s not in seats]
            if left:
                holding[event["booking"]] = left
            else:
                holding.pop(event["booking"], None)
    return holding


async def _rush(cluster: Cluster, http: aiohttp.ClientSession, show: BestShow,
                requests: list[int]) -> list[tuple[int, Any]]:
    nodes = cluster.nodes(show.region) + [n for n in cluster.nodes()
                                          if n not in cluster.nodes(show.region)]
    return list(await asyncio.gather(
        *(_rush_one(http, nodes, show.id, i, count) for i, count in enumerate(requests))))


async def test_a_rush_of_best_available_sells_a_show_out(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    theatre = next(t.id for t in catalog.theatres
                   if clean.placement.region_of(t.id) == "north")
    async with best_show(clean, catalog, theatre) as show:
        layout = layout_of(show.seats, show.focal_row)
        master = make_master(clean.topology, show.region, near=show.region)
        pubsub = master.pubsub()
        events: list[dict[str, Any]] = []
        stop = asyncio.Event()
        await pubsub.subscribe(keys.show_changes(show.id))
        collector = asyncio.ensure_future(_collect(pubsub, events, stop))
        try:
            rng = random.Random(500)
            requests = [rng.randint(1, 6) for _ in range(RUSH)]
            assert sum(requests) > len(show.seats)  # more asked than there is
            results = await _rush(clean, http, show, requests)
            # Then single seats until none is left: the show sells out.
            sweep = 0
            while True:
                status, body = await _rush_one(http, clean.nodes(show.region), show.id,
                                               RUSH + sweep, 1)
                if status != 201:
                    break
                results.append((status, body))
                requests.append(1)
                sweep += 1
            assert status == 409 and body["error"] == "no_block_available", body
            await asyncio.sleep(1.0)  # the last publishes reach us
        finally:
            stop.set()
            await collector
            await pubsub.aclose()
            await master.aclose()

        holds: dict[str, list[str]] = {}
        for count, (status, body) in zip(requests, results, strict=True):
            if status == 201:
                assert len(body["seats"]) == count and body["seats"] == body["seat_ids"]
                holds[body["booking_id"]] = body["seats"]
            else:
                # Refused only when no block of its size was left, by the script's answer.
                assert status == 409 and body["error"] == "no_block_available", body
                assert body["longest_free_run"] < count, body
        chosen = [s for seats in holds.values() for s in seats]
        assert len(chosen) == len(set(chosen)) == len(show.seats)  # no seat twice; all sold
        rows = await clean.fetch(show.region, "SELECT seat_id, status, hold_booking_id "
                                 "FROM show_seat WHERE show_id = $1", show.id)
        assert {r["seat_id"]: r["hold_booking_id"] for r in rows} == {
            s: b for b, seats in holds.items() for s in seats}
        assert {r["status"] for r in rows} == {"LOCKED"}
        # Every hold was the rule's choice from the seats free at that moment (so none
        # left an orphan while a clean block existed), in the master's order.
        assert _replay(layout, {s.seat_id for s in show.seats}, events) == holds


async def test_orphan_check_of_a_manual_pick(clean: Cluster, http: aiohttp.ClientSession,
                                             catalog: Any) -> None:
    """Row A: 1-3 | 4-9 | 10-12 (aisles after 3 and 9): A2 + A3 leave A1 alone."""
    theatre = next(t.id for t in catalog.theatres
                   if clean.placement.region_of(t.id) == "south")
    async with best_show(clean, catalog, theatre, rows=2, per_row=12) as warn:
        node = clean.node(warn.region)
        status, body = await call(http, "POST", f"{node}/booking/seats/{warn.id}/lock",
                                  user="pick-a", json={"seat_ids": ["A2", "A3"]})
        assert status == 201 and body["orphaned"] == ["A1"], body
        status, body = await call(http, "POST", f"{node}/booking/seats/{warn.id}/lock",
                                  user="pick-b", json={"seat_ids": ["A4", "A5"]})
        assert status == 201 and "orphaned" not in body, body
    async with best_show(clean, catalog, theatre, rows=2, per_row=12,
                         no_orphan_seats="refuse") as refuse:
        status, body = await call(http, "POST", f"{node}/booking/seats/{refuse.id}/lock",
                                  user="pick-a", json={"seat_ids": ["A2", "A3"]})
        assert status == 409 and body["error"] == "orphan_seat" and body["seats"] == ["A1"]
        status, body = await call(http, "POST", f"{node}/booking/seats/{refuse.id}/lock",
                                  user="pick-a", json={"seat_ids": ["A1", "A2", "A3"]})
        assert status == 201 and "orphaned" not in body, body


async def test_the_reconciler_writes_missing_and_wrong_layouts(
        clean: Cluster, catalog: Any) -> None:
    region = "south"
    shows = shows_in(clean, catalog, region)[:2]
    master = make_master(clean.topology, region)
    try:
        async with Connections(clean.topology, region) as connections:
            reconciler = Reconciler(connections, HomeRegion(connections), region)
            await master.delete(keys.show_layout(shows[0]))
            await master.hset(keys.show_layout(shows[1]), mapping={"n": "0",
                                                                   "digest": "wrong"})
            report = await reconciler.repair(shows)
            assert sorted(report.layouts) == sorted(shows)
            screen = next(s for s in catalog.shows if s.id == shows[0]).screen_id
            want = layout_of([s for s in catalog.seats if s.screen_id == screen],
                             next(s.focal_row for s in catalog.screens if s.id == screen))
            assert best.decode(await master.hgetall(keys.show_layout(shows[0]))) == want
            assert (await reconciler.repair(shows)).layouts == []  # and it stays repaired
    finally:
        await master.aclose()
