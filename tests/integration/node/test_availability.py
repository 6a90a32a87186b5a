"""CP: a home region whose Redis master or PostgreSQL primary is stopped refuses
its writes with 503 within 2 s; the other regions keep selling."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bookcluster.local import faults
from bookcluster.seats import keys
from bookcluster.stores.connections import make_redis, region_dsn
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_holds import confirm, hold
from tests.integration.support import bearer, call, paid

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
    with paused(clean, "south.postgres.1"):
        elapsed, (status, body) = await timed(hold(http, clean.node("north"), south_show, "u",
                                                   seats))
        # The hold statement was sent: it may land when the primary wakes, so the
        # answer says so, and by when such a hold lapses at the latest.
        assert status == 503 and body["error"] == "region_unavailable", body
        assert body["region"] == "south" and body["outcome"] == "unknown", body
        assert datetime.fromisoformat(body["lapses_by"]) > datetime.now(UTC), body
        assert body["retry_after_s"] == 1, body
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
    with paused(clean, "south.postgres.1"):
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


# A client of the application role that locks seat rows inside a transaction and
# then says nothing more, as a node stopped mid-confirm would. It sets nothing
# itself: the limits it meets are the role's. Prints its backend pid once locked.
SILENT_LOCKER = """
import asyncio, sys, asyncpg
async def main():
    conn = await asyncpg.connect(sys.argv[1])
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    tx = conn.transaction()
    await tx.start()
    await conn.fetch("SELECT 1 FROM show_seat WHERE show_id = $1 AND seat_id = ANY($2::text[]) "
                     "ORDER BY seat_id FOR UPDATE", int(sys.argv[2]), sys.argv[3:])
    print(pid, flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


async def test_a_stopped_client_in_a_transaction_loses_its_locks(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    """Seat rows locked by a session whose client was SIGSTOPped: writes on them get a
    fast 503 while the lock lasts; the server ends the silent session after
    `idle_in_transaction_session_timeout` (5 s), and the same writes then succeed."""
    conn = await clean.pg("north")
    try:  # the role's limits, as any session of it sees them
        limits = {name: await conn.fetchval(f"SHOW {name}") for name in
                  ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout")}
    finally:
        await conn.close()
    assert limits == {"lock_timeout": "1s", "statement_timeout": "2s",
                      "idle_in_transaction_session_timeout": "5s"}

    show = shows_in(clean, catalog, "north")[0]
    seats = seats_of(catalog, show, 4)
    status, held = await hold(http, clean.node("north"), show, "alice", seats[:2])
    assert status == 201, held
    await paid(http, clean.node("north"), held["booking_id"], "p")  # captured beforehand
    topology = clean.topology
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SILENT_LOCKER, region_dsn(topology.region("north")),
        str(show), *seats, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PGPASSWORD": topology.secrets.pg_password})
    try:
        assert proc.stdout is not None
        silent_pid = int(await asyncio.wait_for(proc.stdout.readline(), 30))
        silent_since = time.monotonic()
        with faults.paused(proc.pid):
            refused: list[str] = []
            confirmed_at = held_at = None
            while confirmed_at is None or held_at is None:
                assert time.monotonic() - silent_since < 15, "the locks were never released"
                attempts = []
                if confirmed_at is None:
                    attempts.append(("confirm", timed(confirm(
                        http, clean.node("south"), held["booking_id"], "k", "p"))))
                if held_at is None:
                    attempts.append(("hold", timed(hold(http, clean.node("west"), show, "bob",
                                                        seats[2:]))))
                results = await asyncio.gather(*(coro for _, coro in attempts))
                now = time.monotonic() - silent_since
                for (what, _), (elapsed, (status, body)) in zip(attempts, results, strict=True):
                    if status == 503:
                        assert elapsed <= DEADLINE_S, (what, elapsed)
                        assert body["error"] in ("transaction_aborted", "region_unavailable")
                        refused.append(f"{body['error']}/{body.get('reason', '-')}")
                    elif what == "confirm":
                        assert status == 200, body
                        confirmed_at = now
                    else:
                        assert status == 201, body
                        held_at = now
                await asyncio.sleep(0.05)
        gone = await clean.fetch("north", "SELECT pid FROM pg_stat_activity WHERE pid = $1",
                                 silent_pid)
        assert gone == []
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    # While the silent session lived (5 s), nothing got through; right after, both did.
    assert refused and min(confirmed_at, held_at) >= 4.5, (refused, confirmed_at, held_at)
    assert max(confirmed_at, held_at) <= 5 + 2 * DEADLINE_S
    print(f"silent session: {len(refused)} writes refused 503 ({sorted(set(refused))}); "
          f"confirm 200 at {confirmed_at:.2f} s, hold 201 at {held_at:.2f} s "
          "after it went silent (idle-in-transaction timeout 5 s)")


async def test_answers_name_the_home_nodes(clean: Cluster, http: aiohttp.ClientSession,
                                           catalog: Any) -> None:
    """A seat map from any node names the show's home region and its nodes, where a
    client sends its writes directly."""
    show = shows_in(clean, catalog, "south")[0]
    async with http.get(f"{clean.node('north')}/shows/{show}/seats") as resp:
        assert resp.status == 200
        assert resp.headers["X-Bookcluster-Home-Region"] == "south"
        home_nodes = resp.headers["X-Bookcluster-Home-Nodes"].split()
    assert home_nodes == clean.nodes("south")
    status, body = await hold(http, home_nodes[0], show, "homer", seats_of(catalog, show, 1))
    assert status == 201, body
    assert resp.headers["X-Bookcluster-Home-Region"] == "south"
    async with http.get(f"{clean.node('west')}/booking/booking/{body['booking_id']}",
                        headers=bearer("homer")) as resp:
        assert resp.headers["X-Bookcluster-Home-Nodes"].split() == home_nodes
