"""Fenced, idempotent confirm; cancel; extend; expiry."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import aiohttp

from bookcluster.seats import keys
from bookcluster.stores.connections import make_redis
from tests.integration.conftest import SHORT_TTL_S, Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_holds import confirm, hold
from tests.integration.support import Session, bearer, call, paid


async def raw_confirm(http: aiohttp.ClientSession, node: str, booking: str, key: str,
                      body: Any) -> tuple[int, bytes]:
    """The confirm's raw answer; `payment_id` names a real captured payment (see `paid`)."""
    body = {**body, "payment_id": await paid(http, node, booking, body["payment_id"])}
    async with http.post(f"{node}/booking/booking/{booking}/confirm", json=body,
                         headers={"Idempotency-Key": key, **bearer(Session.owners[booking])}
                         ) as resp:
        return resp.status, await resp.read()


async def test_confirm_then_replay_is_byte_identical(clean: Cluster, http: aiohttp.ClientSession,
                                                     catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[0]
    seats = seats_of(catalog, show, 2)
    _, held = await hold(http, clean.node("south"), show, "alice", seats)
    booking = held["booking_id"]
    first = await raw_confirm(http, clean.node("west"), booking, "key-1", {"payment_id": "pay-1"})
    again = await raw_confirm(http, clean.node("north"), booking, "key-1", {"payment_id": "pay-1"})
    assert first[0] == 200 and first == again
    status, body = await call(http, "GET", f"{clean.node('south')}/booking/booking/{booking}")
    assert body["status"] == "CONFIRMED"
    assert body["payment_id"] == await paid(http, clean.node("west"), booking, "pay-1")
    rows = await clean.fetch("north", "SELECT status, booked_booking_id FROM show_seat "
                             "WHERE show_id = $1 AND seat_id = ANY($2::text[])", show, seats)
    assert {(r["status"], r["booked_booking_id"]) for r in rows} == {("BOOKED", booking)}
    outbox = await clean.fetch("north", "SELECT kind FROM outbox ORDER BY id")
    assert [r["kind"] for r in outbox] == ["ticket", "notification"]
    # The seat map shows them booked, everywhere (through replication).
    redis = make_redis(clean.topology.region("north").redis_master, clean.topology.secrets)
    try:
        assert await redis.hgetall(keys.show_booked(show)) == {s: booking for s in seats}
        assert await redis.hgetall(keys.show_holds(show)) == {}
    finally:
        await redis.aclose()


async def test_same_key_different_body_is_422(clean: Cluster, http: aiohttp.ClientSession,
                                              catalog: Any) -> None:
    show = shows_in(clean, catalog, "west")[0]
    _, held = await hold(http, clean.node("west"), show, "u", seats_of(catalog, show, 1))
    assert (await confirm(http, clean.node("west"), held["booking_id"], "k", "p1"))[0] == 200
    status, body = await confirm(http, clean.node("west"), held["booking_id"], "k", "p2")
    assert status == 422 and body["error"] == "idempotency_key_reused"


async def test_concurrent_duplicates_run_once(clean: Cluster, http: aiohttp.ClientSession,
                                              catalog: Any) -> None:
    show = shows_in(clean, catalog, "south")[0]
    _, held = await hold(http, clean.node("south"), show, "u", seats_of(catalog, show, 3))
    booking = held["booking_id"]
    nodes = clean.nodes()
    results = await asyncio.gather(*(
        raw_confirm(http, nodes[i % len(nodes)], booking, "dup-key", {"payment_id": "pay-x"})
        for i in range(30)))
    assert {r for r in results} == {results[0]} and results[0][0] == 200
    assert len(await clean.fetch("south", "SELECT 1 FROM payment")) == 1
    assert len(await clean.fetch("south", "SELECT 1 FROM outbox")) == 2
    # A different key with the same payment answers the sale; it does not sell again.
    status, body = await confirm(http, nodes[0], booking, "other-key", "pay-x")
    assert status == 200 and body["status"] == "CONFIRMED"
    assert len(await clean.fetch("south", "SELECT 1 FROM outbox")) == 2
    # Another payment for a sold booking is refused.
    status, body = await confirm(http, nodes[0], booking, "third-key", "pay-y")
    assert status == 409 and body["error"] == "booking_not_pending"


async def test_keys_are_scoped_to_the_booking_user(clean: Cluster, http: aiohttp.ClientSession,
                                                   catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[0]
    a, b = seats_of(catalog, show, 2)
    _, mine = await hold(http, clean.node("north"), show, "alice", [a])
    _, theirs = await hold(http, clean.node("north"), show, "bob", [b])
    assert (await confirm(http, clean.node("north"), mine["booking_id"], "same", "pa"))[0] == 200
    status, body = await confirm(http, clean.node("north"), theirs["booking_id"], "same", "pb")
    assert status == 200 and body["booking_id"] == theirs["booking_id"]


async def test_paused_client_is_fenced_out(clean: Cluster, http: aiohttp.ClientSession,
                                           catalog: Any) -> None:
    """A's hold lapses while A is 'paused'; B holds and buys; A's late confirm is refused."""
    show = shows_in(clean, catalog, "north")[1]
    seats = seats_of(catalog, show, 2)
    status, a = await hold(http, clean.short_ttl_node, show, "alice", seats)
    assert status == 201
    await asyncio.sleep(SHORT_TTL_S + 0.3)
    status, b = await hold(http, clean.node("west"), show, "bob", seats)
    assert status == 201, b
    assert b["hold_token"] > a["hold_token"]
    assert (await confirm(http, clean.node("south"), b["booking_id"], "kb", "pay-b"))[0] == 200

    late = await raw_confirm(http, clean.node("north"), a["booking_id"], "ka",
                             {"payment_id": "pay-a"})
    assert late[0] == 409
    retry = await raw_confirm(http, clean.node("west"), a["booking_id"], "ka",
                              {"payment_id": "pay-a"})
    assert retry == late
    assert b'"seats_taken"' in late[1] or b'"hold_expired"' in late[1]
    sold = await clean.fetch("north", "SELECT booking_id FROM booking_seat "
                             "WHERE show_id = $1 AND sold", show)
    assert {r["booking_id"] for r in sold} == {b["booking_id"]}
    pay_a = await paid(http, clean.node("north"), a["booking_id"], "pay-a")
    assert not await clean.fetch("north", "SELECT 1 FROM payment WHERE id = $1", pay_a)


async def test_late_confirm_succeeds_when_nobody_took_the_seats(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    """Documented decision: the row locks make re-hold + confirm atomic."""
    show = shows_in(clean, catalog, "north")[1]
    seats = seats_of(catalog, show, 3)[2:]
    _, held = await hold(http, clean.short_ttl_node, show, "alice", seats)
    # Stop the sweeper from racing us: expire-by-TTL is enough for this case.
    await asyncio.sleep(SHORT_TTL_S + 0.1)
    status, body = await confirm(http, clean.node("north"), held["booking_id"], "k", "p")
    if status == 409:  # the sweeper got there first: then the booking is EXPIRED
        assert body["error"] == "hold_expired" and body["status"] == "EXPIRED"
    else:
        assert status == 200 and body["status"] == "CONFIRMED"


async def test_sweeper_expires_lapsed_holds(clean: Cluster, http: aiohttp.ClientSession,
                                            catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[0]
    seats = seats_of(catalog, show, 2)
    _, held = await hold(http, clean.short_ttl_node, show, "alice", seats)
    booking = held["booking_id"]
    for _ in range(100):
        _, body = await call(http, "GET", f"{clean.node('north')}/booking/booking/{booking}")
        if body["status"] == "EXPIRED":
            break
        await asyncio.sleep(0.1)
    assert body["status"] == "EXPIRED"
    rows = await clean.fetch("north", "SELECT status, hold_booking_id FROM show_seat "
                             "WHERE show_id = $1 AND seat_id = ANY($2::text[])", show, seats)
    assert {(r["status"], r["hold_booking_id"]) for r in rows} == {("AVAILABLE", None)}
    status, body = await confirm(http, clean.node("north"), booking, "k", "p")
    assert status == 409 and body["error"] == "hold_expired"
    status, _ = await hold(http, clean.node("south"), show, "bob", seats)
    assert status == 201


async def test_cancel_frees_seats(clean: Cluster, http: aiohttp.ClientSession,
                                  catalog: Any) -> None:
    show = shows_in(clean, catalog, "south")[0]
    seats = seats_of(catalog, show, 2)
    _, held = await hold(http, clean.node("north"), show, "alice", seats)
    status, body = await call(http, "POST",
                              f"{clean.node('west')}/booking/booking/{held['booking_id']}/cancel")
    assert status == 200 and body["status"] == "CANCELLED"
    status, again = await call(http, "POST",
                               f"{clean.node('west')}/booking/booking/{held['booking_id']}/cancel")
    assert status == 200 and again["status"] == "CANCELLED"
    assert (await hold(http, clean.node("south"), show, "bob", seats))[0] == 201
    status, body = await confirm(http, clean.node("south"), held["booking_id"], "k", "p")
    assert status == 409 and body["error"] == "hold_expired"


async def test_cancel_of_confirmed_booking_is_refused(clean: Cluster,
                                                      http: aiohttp.ClientSession,
                                                      catalog: Any) -> None:
    show = shows_in(clean, catalog, "west")[0]
    _, held = await hold(http, clean.node("west"), show, "u", seats_of(catalog, show, 1))
    await confirm(http, clean.node("west"), held["booking_id"], "k", "p")
    status, body = await call(http, "POST",
                              f"{clean.node('west')}/booking/booking/{held['booking_id']}/cancel")
    assert status == 409 and body["error"] == "booking_not_pending"
    assert body["status"] == "CONFIRMED"


async def test_extend_pushes_expiry_and_refuses_lost_holds(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[0]
    seats = seats_of(catalog, show, 2)
    _, held = await hold(http, clean.short_ttl_node, show, "alice", seats)
    await asyncio.sleep(0.3)
    url = f"{clean.short_ttl_node}/booking/booking/{held['booking_id']}/extend"
    status, body = await call(http, "POST", url)
    assert status == 200 and body["expires_at"] > held["expires_at"]
    await asyncio.sleep(SHORT_TTL_S + 0.3)
    status, body = await call(http, "POST", url)
    assert status == 409 and body["error"] in ("hold_expired", "booking_not_pending")


async def test_user_bookings_span_regions_newest_first(clean: Cluster,
                                                       http: aiohttp.ClientSession,
                                                       catalog: Any) -> None:
    made = []
    for region in ("south", "north", "west"):
        show = shows_in(clean, catalog, region)[0]
        _, held = await hold(http, clean.node("north"), show, "traveller",
                             seats_of(catalog, show, 1))
        made.append(held["booking_id"])
    status, body = await call(http, "GET", f"{clean.node('west')}/users/traveller/bookings",
                              user="traveller")
    assert status == 200 and body["unavailable_regions"] == []
    assert [b["booking_id"] for b in body["bookings"]] == list(reversed(made))
    assert {b["region"] for b in body["bookings"]} == {"north", "south", "west"}


# What an extend or a confirm may answer while the other runs on the same booking.
RACE_ANSWERS = {(200, None), (409, "booking_not_pending"), (409, "hold_expired"),
                (503, "transaction_aborted"), (503, "region_unavailable")}


async def test_extends_racing_confirms_never_deadlock(clean: Cluster,
                                                      http: aiohttp.ClientSession,
                                                      catalog: Any) -> None:
    """Extends and confirms of the same bookings, all at once: both lock the booking row
    and then its seats in seat-id order, so they queue; PostgreSQL finds no deadlock and
    no answer is a 500."""
    show = shows_in(clean, catalog, "west")[0]
    seats = seats_of(catalog, show, 30)
    bookings = []
    for i in range(10):
        status, held = await hold(http, clean.node("west"), show, f"racer{i}",
                                  seats[3 * i:3 * i + 3])
        assert status == 201, held
        bookings.append(held["booking_id"])
    nodes = clean.nodes("west")
    await asyncio.gather(*(paid(http, nodes[0], b, "p") for b in bookings))
    log = clean.topology.settings.run_dir / "logs" / "west.postgres.1.log"
    deadlocks_before = log.read_text().count("deadlock detected")

    async def extend(booking: str, i: int) -> tuple[str, int, Any]:
        status, body = await call(http, "POST",
                                  f"{nodes[i % 2]}/booking/booking/{booking}/extend")
        return "extend", status, body

    async def sell(booking: str, i: int) -> tuple[str, int, Any]:
        status, body = await confirm(http, nodes[i % 2], booking, f"k{i}", "p")
        return "confirm", status, body

    calls = [op(b, i) for b in bookings for op, n in ((extend, 6), (sell, 3)) for i in range(n)]
    random.Random(5).shuffle(calls)
    results = await asyncio.gather(*calls)
    answers = Counter((what, status, body.get("error") if status != 200 else None)
                      for what, status, body in results)
    print("extend/confirm race:", dict(answers))
    assert {(status, error) for _, status, error in answers} <= RACE_ANSWERS, answers
    assert log.read_text().count("deadlock detected") == deadlocks_before
    for booking in bookings:  # a confirm answered 503 changed nothing: its retry sells
        status, body = await confirm(http, nodes[0], booking, "k0", "p")
        assert status == 200 and body["status"] == "CONFIRMED", body
    rows = await clean.fetch("west", "SELECT status, count(*) AS n FROM show_seat "
                             "WHERE show_id = $1 AND seat_id = ANY($2::text[]) GROUP BY 1",
                             show, seats)
    assert {r["status"]: r["n"] for r in rows} == {"BOOKED": 30}
