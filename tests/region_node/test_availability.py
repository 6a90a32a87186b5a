"""CP: a home region whose Redis master or PostgreSQL primary is stopped refuses
its writes with 503 within 2 s; the other regions keep selling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp

from cluster import faults
from region_node import keys
from router.registry import make_redis
from tests.conftest import Cluster
from tests.region_node.helpers import seats_of, shows_in
from tests.region_node.test_holds import confirm, hold
from tests.support import call, paid

DEADLINE_S = 2.0


@contextmanager
def paused(cluster: Cluster, name: str) -> Iterator[None]:
    """SIGSTOP a process and all its descendants (PostgreSQL's backends too)."""
    with faults.paused(cluster.launcher.child(name).pid):
        yield


async def timed(coro: Any) -> tuple[float, tuple[int, Any]]:
    started = time.monotonic()
    result = await coro
    return time.monotonic() - started, result


async def test_stopped_redis_master_fails_fast_and_only_its_region(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    south_show = shows_in(clean, catalog, "south")[0]
    north_show = shows_in(clean, catalog, "north")[0]
    _, before = await hold(http, clean.node("west"), south_show, "early",
                           seats_of(catalog, south_show, 1))
    await paid(http, clean.node("west"), before["booking_id"], "p")  # captured beforehand
    with paused(clean, "south.redis.master"):
        elapsed, (status, body) = await timed(hold(
            http, clean.node("north"), south_show, "u", seats_of(catalog, south_show, 3)[1:]))
        assert status == 503 and body["error"] == "region_unavailable"
        assert body["region"] == "south"
        assert elapsed <= DEADLINE_S, elapsed
        print(f"hold with south's Redis master stopped: 503 in {elapsed * 1000:.0f} ms")

        # Confirm of a south booking: PostgreSQL is up, so the sale commits;
        # only the Redis bookkeeping after it is skipped (it never blocks a sale).
        elapsed, (status, _) = await timed(confirm(http, clean.node("north"),
                                                   before["booking_id"], "k", "p"))
        assert status == 200 and elapsed <= DEADLINE_S + 1.0, elapsed

        elapsed, (status, body) = await timed(hold(
            http, clean.node("west"), north_show, "u", seats_of(catalog, north_show, 2)))
        assert status == 201, body
        assert elapsed <= DEADLINE_S


async def test_stopped_postgres_primary_fails_fast_and_releases_the_hold(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    south_show = shows_in(clean, catalog, "south")[0]
    west_show = shows_in(clean, catalog, "west")[0]
    seats = seats_of(catalog, south_show, 2)
    _, before = await hold(http, clean.node("west"), south_show, "early",
                           seats_of(catalog, south_show, 4)[3:])
    await paid(http, clean.node("west"), before["booking_id"], "p")  # captured beforehand
    with paused(clean, "south.postgres.primary"):
        elapsed, (status, body) = await timed(hold(http, clean.node("north"), south_show, "u",
                                                   seats))
        assert status == 503 and body == {"error": "region_unavailable", "region": "south",
                                          "message": body["message"]}
        assert elapsed <= DEADLINE_S, elapsed
        print(f"hold with south's PostgreSQL stopped: 503 in {elapsed * 1000:.0f} ms")

        elapsed, (status, body) = await timed(confirm(http, clean.node("north"),
                                                      before["booking_id"], "k", "p"))
        assert status == 503 and elapsed <= DEADLINE_S, (status, elapsed)
        print(f"confirm with south's PostgreSQL stopped: 503 in {elapsed * 1000:.0f} ms")

        elapsed, (status, _) = await timed(hold(http, clean.node("north"), west_show, "u",
                                                seats_of(catalog, west_show, 2)))
        assert status == 201 and elapsed <= DEADLINE_S
    # The Redis hold taken before PostgreSQL failed was released.
    redis = make_redis(clean.topology.region("south").redis_master, clean.topology.secrets)
    try:
        holds = await redis.hgetall(keys.show_holds(south_show))
    finally:
        await redis.aclose()
    assert not set(seats) & set(holds)
    # The PostgreSQL write may have landed once the primary woke up; then the
    # sweeper expires it at once (an abandoned hold), so no seat stays held.
    for _ in range(50):
        rows = await clean.fetch("south", "SELECT status FROM booking WHERE user_id = 'u'")
        if all(r["status"] == "EXPIRED" for r in rows):
            break
        await asyncio.sleep(0.1)
    assert all(r["status"] == "EXPIRED" for r in rows), rows
    # And once it is back, the same seats sell.
    status, _ = await hold(http, clean.node("north"), south_show, "u2", seats)
    assert status == 201


async def test_writes_from_another_region_go_through_a_home_node(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    """A north node forwards a south hold to a south node; with every south node
    stopped the answer is a 503 within the deadline, and north's own sales go on."""
    south_show = shows_in(clean, catalog, "south")[0]
    north_show = shows_in(clean, catalog, "north")[0]
    south_nodes = [clean.launcher.child(f"south.node.{i}").pid for i in (1, 2)]
    with faults.paused(south_nodes[0]):
        # One home node stopped: a request sent to it is not repeated elsewhere
        # (it may have run), so either node may be picked: 201 or a clean 503.
        status, body = await hold(http, clean.node("north"), south_show, "u",
                                  seats_of(catalog, south_show, 1))
        assert status in (201, 503), body
    with faults.paused(south_nodes[0]), faults.paused(south_nodes[1]):
        elapsed, (status, body) = await timed(hold(http, clean.node("north"), south_show, "u",
                                                   seats_of(catalog, south_show, 3)[1:]))
        assert status == 503 and body["error"] == "region_unavailable"
        assert body["region"] == "south" and elapsed <= DEADLINE_S, elapsed
        status, _ = await hold(http, clean.node("north"), north_show, "u",
                               seats_of(catalog, north_show, 1))
        assert status == 201


async def test_a_dead_home_node_is_skipped(clean: Cluster, http: aiohttp.ClientSession,
                                           catalog: Any) -> None:
    show = shows_in(clean, catalog, "west")[0]
    clean.launcher.stop_child("west.node.2")  # refuses connections: never sent, try another
    try:
        for i, seat in enumerate(seats_of(catalog, show, 4)):
            status, body = await hold(http, clean.node("south"), show, f"u{i}", [seat])
            assert status == 201, body
            assert body["region"] == "west"
    finally:
        await clean.launcher.restart_stopped("west.node.2")


async def test_bookings_list_names_a_stopped_region_and_shows_the_others(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    """A user's bookings while one region's PostgreSQL primary is stopped: 200 within
    the deadline, that region in `unavailable_regions`, every other region's bookings."""
    made = {}
    for region in ("north", "south", "west"):
        show = shows_in(clean, catalog, region)[0]
        status, held = await hold(http, clean.node("west"), show, "traveller",
                                  seats_of(catalog, show, 1))
        assert status == 201, held
        made[region] = held["booking_id"]
    with paused(clean, "south.postgres.primary"):
        for url in (f"{clean.node('north')}/users/traveller/bookings",
                    f"{clean.node('west', 1)}/me/bookings"):
            elapsed, (status, body) = await timed(call(http, "GET", url, user="traveller"))
            assert status == 200, body
            assert body["unavailable_regions"] == ["south"]
            assert {b["booking_id"] for b in body["bookings"]} == {made["north"], made["west"]}
            assert elapsed <= DEADLINE_S, elapsed
            print(f"bookings list with south's PostgreSQL stopped: 200 in "
                  f"{elapsed * 1000:.0f} ms")
    status, body = await call(http, "GET", f"{clean.node('south')}/me/bookings",
                              user="traveller")
    assert status == 200 and body["unavailable_regions"] == []
    assert {b["booking_id"] for b in body["bookings"]} == set(made.values())

