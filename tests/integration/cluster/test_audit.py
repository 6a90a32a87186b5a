"""The audit: clean after real bookings, and each kind of corruption found exactly."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from bookcluster.booking.onsales import GUARD_REFRESH_S
from bookcluster.booking.passes import ADMISSION_HEADER, TICKET_HEADER
from bookcluster.node.auth import OPERATOR, mint
from bookcluster.ops.audit import AuditReport, Violation, audit_command, print_report, run_audit
from bookcluster.ops.reset import reset_cluster
from bookcluster.seats import keys
from bookcluster.seats.state import digest
from bookcluster.stores.connections import make_redis
from bookcluster.topology.model import Endpoint
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import blocked_seat, seats_of, shows_in
from tests.integration.support import call, free_ports

SALE_TIMEOUT_S = 15.0  # pay -> capture (300 ms) -> webhook -> the worker's saga sells


def bearer(cluster: Cluster, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(cluster.topology, user, 600)}"}


async def hold(http: aiohttp.ClientSession, cluster: Cluster, node: str, show: int,
               seats: list[str], user: str = "u") -> dict[str, Any]:
    status, body = await call(http, "POST", f"{node}/booking/seats/{show}/lock",
                              json={"seat_ids": seats}, headers=bearer(cluster, user))
    assert status == 201, body
    return dict(body)


async def booked(http: aiohttp.ClientSession, cluster: Cluster, show: int,
                 seats: list[str], user: str = "u") -> str:
    """Hold, pay, and wait until the region's worker sold it (and Redis shows it booked):
    the real pay flow. Returns the booking id."""
    held = await hold(http, cluster, cluster.node("west"), show, seats, user)
    booking = str(held["booking_id"])
    status, paid = await call(http, "POST", f"{cluster.node('north')}/booking/booking/"
                              f"{booking}/pay", headers=bearer(cluster, user))
    assert status == 201 and paid["amount_paise"] == held["amount_paise"], paid
    deadline = time.monotonic() + SALE_TIMEOUT_S
    while True:
        status, body = await call(http, "GET", f"{cluster.node('south')}/booking/booking/"
                                  f"{booking}", headers=bearer(cluster, user))
        assert status == 200, body
        in_redis = await redis_cmd(cluster, held["region"], "HMGET",
                                   keys.show_booked(show), *seats)
        if body["status"] == "CONFIRMED" and in_redis == [booking] * len(seats):
            assert body["payment_id"] == paid["payment_id"], body
            return booking
        assert body["status"] == "INITIATED" and time.monotonic() < deadline, body
        await asyncio.sleep(0.1)


async def held(http: aiohttp.ClientSession, cluster: Cluster, show: int,
               seats: list[str]) -> str:
    return str((await hold(http, cluster, cluster.node("south"), show, seats))["booking_id"])


async def redis_cmd(cluster: Cluster, region: str, *args: Any) -> Any:
    client = make_redis(cluster.topology.region(region).redis_master, cluster.topology.secrets)
    try:
        return await client.execute_command(*args)
    finally:
        await client.aclose()


async def drop_caches(cluster: Cluster, region: str, show: int) -> None:
    """What `reset_cluster` does for a show: a new version and a RESET, so every node
    drops its copy and reads the show again."""
    version = await redis_cmd(cluster, region, "INCR", keys.show_version(show))
    await redis_cmd(cluster, region, "PUBLISH", keys.SEAT_CHANGES_CHANNEL, json.dumps(
        {"show": show, "version": version, "status": "RESET", "seats": []}))


async def replicated(cluster: Cluster, region: str) -> None:
    """Every replica of the region's master has what it wrote so far."""
    replicas = len(cluster.topology.regions)  # one in every region
    assert await redis_cmd(cluster, region, "WAIT", replicas, 5000) == replicas


async def seat_map(http: aiohttp.ClientSession, node: str, show: int) -> dict[str, str]:
    status, body = await call(http, "GET", f"{node}/shows/{show}/seats", anonymous=True)
    assert status == 200, body
    return {s["seat_id"]: s["status"] for s in body["seats"]}


def named_node(cluster: Cluster, region: str, index: int = 0) -> tuple[str, str]:
    """A node's URL and its name as it gives it (`NodeSettings.name`)."""
    ep = cluster.topology.region(region).nodes[index]
    return f"http://{ep.host}:{ep.port}", f"{region}@{ep.host}:{ep.port}"


async def execute(cluster: Cluster, region: str, query: str, *args: Any) -> None:
    conn = await cluster.pg(region)
    try:
        await conn.execute(query, *args)
    finally:
        await conn.close()


def only(report: AuditReport) -> Violation:
    assert len(report.violations) == 1, report.violations
    assert report.exit_code == 1 and not report.unreachable
    return report.violations[0]


def expected_seats(cluster: Cluster, catalog: Any, region: str) -> tuple[int, int]:
    """(sellable, blocked) show_seat rows of the region's shows."""
    screens = [next(s.screen_id for s in catalog.shows if s.id == show)
               for show in shows_in(cluster, catalog, region)]
    seats = [seat for screen in screens for seat in catalog.seats if seat.screen_id == screen]
    blocked = sum(seat.blocked for seat in seats)
    return len(seats) - blocked, blocked


def blocked_shows(cluster: Cluster, catalog: Any, region: str) -> set[int]:
    return {show for show in shows_in(cluster, catalog, region)
            if blocked_seat(catalog, [show]) is not None}


async def test_real_bookings_audit_clean_with_counts(clean: Cluster, http: aiohttp.ClientSession,
                                                    catalog: Any) -> None:
    north, south, west = (shows_in(clean, catalog, r)[0] for r in ("north", "south", "west"))
    await booked(http, clean, north, seats_of(catalog, north, 2))
    await held(http, clean, north, seats_of(catalog, north, 3)[2:])
    cancelled = await held(http, clean, south, seats_of(catalog, south, 2))
    status, body = await call(http, "POST",
                              f"{clean.node('west')}/booking/booking/{cancelled}/cancel",
                              headers=bearer(clean, "u"))
    assert status == 200 and body["status"] == "CANCELLED"
    await booked(http, clean, west, seats_of(catalog, west, 3))
    for node in clean.nodes():  # every node caches every touched show: compared too
        for show in (north, south, west):
            await seat_map(http, node, show)

    report = await run_audit(clean.topology)
    assert report.violations == [] and report.unreachable == {} and report.exit_code == 0
    names = [named_node(clean, r, i)[1] for r in clean.topology.regions
             for i in range(len(clean.topology.region(r).nodes))]
    assert sorted(report.node_caches) == sorted(names)
    assert all(n >= 3 for n in report.node_caches.values()), report.node_caches
    want = {"north": ({"CONFIRMED": 1, "INITIATED": 1}, {"BOOKED": 2, "LOCKED": 1}, {north}),
            "south": ({"CANCELLED": 1}, {}, set()),
            "west": ({"CONFIRMED": 1}, {"BOOKED": 3}, {west})}
    for region, (bookings, taken, touched) in want.items():
        counts = report.regions[region]
        assert counts.bookings == {"INITIATED": 0, "CONFIRMED": 0, "CANCELLED": 0,
                                   "EXPIRED": 0, **bookings}, region
        sellable, blocked = expected_seats(clean, catalog, region)
        assert counts.seats == {"AVAILABLE": sellable - sum(taken.values()), "LOCKED": 0,
                                "BOOKED": 0, "UNAVAILABLE": blocked, **taken}, region
        assert counts.shows_checked == len(blocked_shows(clean, catalog, region) | touched)
    out = io.StringIO()
    print_report(report, out)
    assert "no violations" in out.getvalue() and "CONFIRMED 1" in out.getvalue()


async def test_audit_command_exit_codes_and_json(clean: Cluster, http: aiohttp.ClientSession,
                                                 catalog: Any,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    show = shows_in(clean, catalog, "south")[0]
    await booked(http, clean, show, seats_of(catalog, show, 1))
    assert await audit_command(clean.topology, True) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["exit_code"] == 0 and doc["violations"] == [] and doc["unreachable"] == {}
    assert doc["regions"]["south"]["bookings"]["CONFIRMED"] == 1

    # Another show: the worker's reconciler repairs the seats of bookings that just
    # changed, and could fix the ghost before the audit sees it. Its full pass (every
    # show, every 30 s) may still land in between: then the ghost is planted again.
    quiet = shows_in(clean, catalog, "south")[1]
    seat = seats_of(catalog, quiet, 2)[1]
    for _ in range(3):
        await redis_cmd(clean, "south", "HSET", keys.show_booked(quiet), seat, "bghost")
        code = await audit_command(clean.topology, False)
        text = capsys.readouterr().out
        if code == 1 or await redis_cmd(clean, "south", "HGET", keys.show_booked(quiet), seat):
            break
    assert code == 1, text
    assert "1 violation(s)" in text and f"[redis_booked] south show {quiet} seat {seat}" in text


async def test_unreachable_region_is_named(clean: Cluster,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    dead = Endpoint("127.0.0.1", free_ports(1)[0])
    west = replace(clean.topology.region("west"), pg_primary=dead)
    topology = replace(clean.topology, regions={**clean.topology.regions, "west": west})
    assert await audit_command(topology, False) == 2
    text = capsys.readouterr().out
    assert f"west: UNREACHABLE, not audited (postgres primary {dead}" in text
    assert "north: " in text and "south: " in text


async def test_node_caches_are_checked_at_the_current_leader(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    """After a PostgreSQL failover the topology's first member is down (or a standby):
    the node-cache check follows the leader, as the rest of the audit does."""
    show = shows_in(clean, catalog, "north")[0]
    for node in clean.nodes():  # a north show in every node's cache, to be checked
        await seat_map(http, node, show)
    conn = await clean.pg("north")
    try:
        leader = Endpoint("127.0.0.1", await conn.fetchval("SELECT inet_server_port()"))
    finally:
        await conn.close()
    dead = Endpoint("127.0.0.1", free_ports(1)[0])
    north = replace(clean.topology.region("north"), pg_primary=dead, pg_standby=leader)
    topology = replace(clean.topology, regions={**clean.topology.regions, "north": north})
    report = await run_audit(topology)
    assert report.unreachable == {} and report.violations == [], report.unreachable
    assert report.exit_code == 0 and len(report.node_caches) == len(clean.nodes())
    assert all(cached >= 1 for cached in report.node_caches.values()), report.node_caches


async def test_unreachable_node_is_named(clean: Cluster) -> None:
    dead = Endpoint("127.0.0.1", free_ports(1)[0])
    south = clean.topology.region("south")
    topology = replace(clean.topology, regions={
        **clean.topology.regions, "south": replace(south, nodes=(*south.nodes, dead))})
    report = await run_audit(topology)
    assert report.exit_code == 2 and report.violations == []
    assert list(report.unreachable) == [f"node south@{dead}"]
    assert report.unreachable[f"node south@{dead}"].startswith("ClientConnectorError")
    assert len(report.node_caches) == len(clean.nodes())  # the others were audited
    out = io.StringIO()
    print_report(report, out)
    assert f"node south@{dead}: UNREACHABLE, not audited (ClientConnectorError" in out.getvalue()


async def test_seat_cache_is_for_operators_and_says_what_the_seat_map_shows(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "south")[0]
    seats = seats_of(catalog, show, 3)
    await held(http, clean, show, seats[:2])
    node, name = named_node(clean, "north", 1)
    shown = await seat_map(http, node, show)
    url = f"{node}/ops/seat-cache"
    status, body = await call(http, "GET", url, anonymous=True)
    assert status == 401, body
    status, body = await call(http, "GET", url, headers=bearer(clean, "u"))
    assert (status, body["error"]) == (403, "forbidden")
    operator = {"Authorization": f"Bearer {mint(clean.topology, 'ops', 600, (OPERATOR,))}"}
    status, listing = await call(http, "GET", url, headers=operator)
    assert status == 200 and (listing["node"], listing["region"]) == (name, "north")
    (entry,) = [s for s in listing["shows"] if s["show_id"] == show]
    not_available = {seat: st for seat, st in shown.items() if st != "AVAILABLE"}
    assert {seat: not_available[seat] for seat in seats[:2]} == {s: "LOCKED" for s in seats[:2]}
    assert entry["digest"] == digest(not_available) and "seats" not in entry
    assert entry["region"] == "south" and entry["version"] >> 32 == entry["generation"]
    status, one = await call(http, "GET", f"{url}?show={show}", headers=operator)
    assert status == 200 and [s["show_id"] for s in one["shows"]] == [show]
    assert one["shows"][0]["seats"] == not_available
    status, body = await call(http, "GET", f"{url}?show=x1", headers=operator)
    assert (status, body["error"]) == (400, "malformed_id")


async def test_a_node_cache_that_differs_from_postgres_is_found(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    """A node loads a corrupt Redis state that is then put right behind the mirror's
    back (no publish): Redis and PostgreSQL agree, that one node's cache does not."""
    show = shows_in(clean, catalog, "west")[1]
    seat = seats_of(catalog, show, 1)[0]
    node, name = named_node(clean, "south", 1)
    try:
        await drop_caches(clean, "west", show)
        await redis_cmd(clean, "west", "HSET", keys.show_booked(show), seat, "bghost")
        await replicated(clean, "west")
        for _ in range(40):  # until the node heard the RESET (a copy read before it goes)
            if (await seat_map(http, node, show))[seat] == "BOOKED":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the node never loaded the corrupt state")
        await redis_cmd(clean, "west", "HDEL", keys.show_booked(show), seat)
        await replicated(clean, "west")
        assert (await seat_map(http, node, show))[seat] == "BOOKED"  # still cached
        started = time.monotonic()
        report = await run_audit(clean.topology)
        took = time.monotonic() - started
    finally:
        await drop_caches(clean, "west", show)
    found = only(report)
    assert (found.check, found.region, found.show_id, found.seat_id) == (
        "node_cache", "west", show, seat)
    assert found.detail.startswith(f"node {name} shows BOOKED (version ")
    assert found.detail.endswith("); PostgreSQL: AVAILABLE")
    print(f"audit with one wrong node cache took {took:.2f} s (it looks again before it "
          "reports)")


async def test_double_sale_is_found(clean: Cluster, http: aiohttp.ClientSession,
                                    catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[0]
    seat = seats_of(catalog, show, 1)[0]
    first = await booked(http, clean, show, [seat])
    second = f"b{show}-{'0' * 16}"
    conn = await clean.pg("north")
    try:
        # The unique index makes this impossible; drop it to prove the audit would notice.
        await conn.execute("DROP INDEX booking_seat_sold_once")
        try:
            await conn.execute(
                "INSERT INTO booking (id, user_id, show_id, status, fence_token, amount_paise, "
                "expires_at, hold_deadline) VALUES ($1, 'mallory', $2, 'CONFIRMED', 1, 0, "
                "now(), now())", second, show)
            await conn.execute("INSERT INTO booking_seat (booking_id, show_id, seat_id, "
                               "price_paise, sold) VALUES ($1, $2, $3, 0, true)",
                               second, show, seat)
            report = await run_audit(clean.topology)
        finally:
            await conn.execute("DELETE FROM booking_seat WHERE booking_id = $1", second)
            await conn.execute("DELETE FROM booking WHERE id = $1", second)
            await conn.execute("CREATE UNIQUE INDEX booking_seat_sold_once "
                               "ON booking_seat (show_id, seat_id) WHERE sold")
    finally:
        await conn.close()
    assert report.exit_code == 1
    assert sorted(report.violations, key=lambda v: v.check) == [
        Violation("sold_seat", "north", show, seat,
                  f"sold to {second} but show_seat is BOOKED ({first})"),
        Violation("sold_twice", "north", show, seat,
                  f"sold to {', '.join(sorted([first, second]))}"),
        Violation("unpaid_sale", "north", show, None,
                  f"CONFIRMED booking {second} (0 paise) has no payment id"),
    ]


async def test_booking_outside_its_home_region_is_found(clean: Cluster, catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[0]
    await execute(clean, "south",
                  "INSERT INTO booking (id, user_id, show_id, status, fence_token, amount_paise, "
                  "expires_at, hold_deadline) VALUES ($1, 'u', $2, 'CANCELLED', 1, 0, now(), "
                  "now())", f"b{show}-{'1' * 16}", show)
    found = only(await run_audit(clean.topology))
    assert (found.check, found.region, found.show_id, found.seat_id) == (
        "wrong_region", "south", show, None)
    assert found.detail.endswith("which south does not own, whose home is north"), found.detail


async def test_seat_booked_for_an_initiated_booking_is_found(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "west")[0]
    seat = seats_of(catalog, show, 1)[0]
    booking = await held(http, clean, show, [seat])
    await execute(clean, "west",
                  "UPDATE show_seat SET status = 'BOOKED', booked_booking_id = $3, "
                  "hold_booking_id = NULL, hold_expires_at = NULL "
                  "WHERE show_id = $1 AND seat_id = $2", show, seat, booking)
    # Redis and the node caches agree with the corrupt PostgreSQL state, so only the
    # sale itself is wrong.
    await redis_cmd(clean, "west", "HDEL", keys.show_holds(show), seat)
    await redis_cmd(clean, "west", "HSET", keys.show_booked(show), seat, booking)
    await drop_caches(clean, "west", show)
    assert only(await run_audit(clean.topology)) == Violation(
        "booked_seat", "west", show, seat, f"BOOKED by {booking}: booking is INITIATED")


async def test_captured_payment_that_is_neither_sale_nor_refund_is_found(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[0]
    booking = await held(http, clean, show, seats_of(catalog, show, 1))
    await execute(clean, "north", "INSERT INTO payment (id, booking_id, amount_paise, status) "
                  "VALUES ('pay_lost', $1, 100, 'CAPTURED')", booking)
    assert only(await run_audit(clean.topology)) == Violation(
        "money", "north", None, None,
        f"payment pay_lost is CAPTURED but booking {booking} is INITIATED (paid by None)")


@pytest.mark.parametrize(("corruption", "paid"), [
    ("amount_paise = amount_paise - 1", "CAPTURED, {short} paise"),
    ("status = 'REFUNDED'", "REFUNDED, {amount} paise"),
    ("status = 'RECORDED'", "RECORDED, {amount} paise"),
])
async def test_sale_without_a_capture_of_its_exact_amount_is_found(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any, corruption: str,
        paid: str) -> None:
    show = shows_in(clean, catalog, "west")[0]
    booking = await booked(http, clean, show, seats_of(catalog, show, 2))
    clean_report = await run_audit(clean.topology)  # a real sale is clean
    assert clean_report.violations == [] and clean_report.exit_code == 0
    (row,) = await clean.fetch("west", "SELECT amount_paise, payment_id FROM booking "
                               "WHERE id = $1", booking)
    amount, payment = row["amount_paise"], row["payment_id"]
    (captured,) = await clean.fetch("west", "SELECT status, amount_paise FROM payment "
                                    "WHERE id = $1", payment)
    assert (captured["status"], captured["amount_paise"]) == ("CAPTURED", amount)
    await execute(clean, "west", f"UPDATE payment SET {corruption} WHERE id = $1", payment)
    assert only(await run_audit(clean.topology)) == Violation(
        "unpaid_sale", "west", show, None,
        f"CONFIRMED booking {booking} ({amount} paise) is paid by {payment}: "
        + paid.format(amount=amount, short=amount - 1))


async def test_sale_naming_a_missing_payment_is_found(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "south")[0]
    booking = await booked(http, clean, show, seats_of(catalog, show, 1))
    (row,) = await clean.fetch("south", "SELECT amount_paise, payment_id FROM booking "
                               "WHERE id = $1", booking)
    await execute(clean, "south", "UPDATE booking SET payment_id = 'pay_invented' "
                  "WHERE id = $1", booking)
    report = await run_audit(clean.topology)
    # The real capture is now nobody's sale: `money` finds that side.
    assert sorted((v.check, v.detail) for v in report.violations) == [
        ("money", f"payment {row['payment_id']} is CAPTURED but booking {booking} is "
                  "CONFIRMED (paid by pay_invented)"),
        ("unpaid_sale", f"CONFIRMED booking {booking} ({row['amount_paise']} paise) names "
                        "payment pay_invented, which has no payment row")]


async def test_confirmed_booking_with_an_unsold_seat_is_found(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "south")[0]
    seat = seats_of(catalog, show, 1)[0]
    booking = await booked(http, clean, show, [seat])
    await execute(clean, "south", "UPDATE booking_seat SET sold = false WHERE booking_id = $1",
                  booking)
    report = await run_audit(clean.topology)
    assert sorted(report.violations, key=lambda v: v.check) == [
        Violation("booked_seat", "south", show, seat,
                  f"BOOKED by {booking}: its booking_seat row is not sold"),
        Violation("unsold_seat", "south", show, seat,
                  f"CONFIRMED booking {booking} has this seat unsold"),
    ]


async def test_stale_initiated_booking_is_found(clean: Cluster, http: aiohttp.ClientSession,
                                                catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[0]
    booking = await held(http, clean, show, seats_of(catalog, show, 2))
    # The session's sweepers run every 0.5 s. A FOR KEY SHARE lock makes them skip
    # the booking (they take FOR UPDATE ... SKIP LOCKED) while our UPDATE of a
    # non-key column still commits, so the audit sees a stuck booking for as long
    # as we hold the lock.
    guard = await clean.pg("north")
    try:
        async with guard.transaction():
            await guard.execute("SELECT 1 FROM booking WHERE id = $1 FOR KEY SHARE", booking)
            await execute(clean, "north", "UPDATE booking SET expires_at = now() - "
                          "interval '1 hour' WHERE id = $1", booking)
            report = await run_audit(clean.topology)
    finally:
        await guard.close()
    found = only(report)
    assert (found.check, found.region, found.show_id) == ("stale_hold", "north", show)
    assert found.detail.startswith(f"booking {booking} still INITIATED 3600")


async def test_redis_booked_entry_unknown_to_postgres_is_found(clean: Cluster,
                                                               catalog: Any) -> None:
    show = shows_in(clean, catalog, "west")[0]
    seat = seats_of(catalog, show, 1)[0]
    await redis_cmd(clean, "west", "HSET", keys.show_booked(show), seat, "bghost")
    assert only(await run_audit(clean.topology)) == Violation(
        "redis_booked", "west", show, seat, "PostgreSQL: AVAILABLE; Redis booked: bghost")


async def test_postgres_hold_without_redis_hold_is_found(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "south")[0]
    kept, lost = seats_of(catalog, show, 2)
    booking = await held(http, clean, show, [kept, lost])
    await redis_cmd(clean, "south", "HDEL", keys.show_holds(show), lost)
    found = only(await run_audit(clean.topology))
    assert (found.check, found.region, found.show_id, found.seat_id) == (
        "pg_hold", "south", show, lost)
    assert found.detail.startswith(f"PostgreSQL: LOCKED by {booking}")
    assert found.detail.endswith("Redis hold: none")


async def test_live_redis_hold_without_postgres_row_is_found(clean: Cluster,
                                                             catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[0]
    seat = seats_of(catalog, show, 1)[0]
    now_s, _ = await redis_cmd(clean, "north", "TIME")
    await redis_cmd(clean, "north", "HSET", keys.show_holds(show), seat,
                    f"bghost|{(int(now_s) + 300) * 1000}")
    found = only(await run_audit(clean.topology))
    assert (found.check, found.region, found.show_id, found.seat_id) == (
        "redis_hold", "north", show, seat)
    assert found.detail.endswith("PostgreSQL: AVAILABLE")


async def test_redis_blocked_set_disagreeing_is_found(clean: Cluster, catalog: Any) -> None:
    show = shows_in(clean, catalog, "west")[0]
    seat = seats_of(catalog, show, 1)[0]
    # reset_cluster does not restore blocked sets: undo by hand.
    await redis_cmd(clean, "west", "SADD", keys.show_blocked(show), seat)
    try:
        report = await run_audit(clean.topology)
    finally:
        await redis_cmd(clean, "west", "SREM", keys.show_blocked(show), seat)
    assert only(report) == Violation("redis_blocked", "west", show, seat,
                                     "blocked in Redis, AVAILABLE in PostgreSQL")


async def test_expired_redis_holds_are_not_judged(clean: Cluster, catalog: Any) -> None:
    """A lapsed hold left in the hash is free by definition (seatstate), not a disagreement."""
    show = shows_in(clean, catalog, "south")[0]
    seat = seats_of(catalog, show, 1)[0]
    await redis_cmd(clean, "south", "HSET", keys.show_holds(show), seat, "bold|1000")
    report = await run_audit(clean.topology)
    assert report.violations == [] and report.exit_code == 0


async def test_admissions_without_a_sale_or_counted_twice_are_found(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "south")[0]
    booking = await booked(http, clean, show, seats_of(catalog, show, 1))
    plant = ("INSERT INTO checkin_scan (booking_id, show_id, nonce, gate, scanner, direction, "
             "scanned_at, outcome) VALUES ($1, $2, $3, $4, 'gate-1', 'in', now(), $5)")
    # Admitted, a double the gate reported (not a violation), then admitted again.
    await execute(clean, "south", plant, booking, show, "n-1", "door-a", "admitted")
    await execute(clean, "south", plant, booking, show, "n-2", "door-b", "entered_twice")
    assert (await run_audit(clean.topology)).violations == []
    await execute(clean, "south", plant, booking, show, "n-3", "door-c", "admitted")
    violation = only(await run_audit(clean.topology))
    assert (violation.check, violation.show_id) == ("door_admitted_twice", show)
    assert booking in violation.detail and "door-c" in violation.detail
    await execute(clean, "south", "DELETE FROM checkin_scan WHERE nonce = 'n-3'")
    # An admission of a booking that was never sold.
    await execute(clean, "south", plant, f"b{show}-00000000000000aa", show, "n-4", "door-a",
                  "admitted")
    violation = only(await run_audit(clean.topology))
    assert (violation.check, violation.show_id) == ("door_admission_unsold", show)
    assert "missing" in violation.detail


# -- on-sales ---------------------------------------------------------------------------

@pytest.fixture
async def onsale_cluster(clean: Cluster) -> AsyncIterator[Cluster]:
    """The clean cluster; afterwards its on-sales dropped (PostgreSQL, the masters'
    copies) and every node's guard cache outlived, so later tests hold freely."""
    yield clean
    await reset_cluster(clean.topology)
    await asyncio.sleep(GUARD_REFRESH_S + 0.5)


async def plant_onsale(cluster: Cluster, show: int, queue: list[str], frontier: int,
                       holds: list[tuple[str, str, float, str | None]]) -> str:
    """An on-sale of `show` made an hour ago whose sale started (seed 0, nobody joined
    before it: places are join order) with `queue` joined and places below `frontier`
    admitted 10 s ago; `holds` (booking suffix, user, seconds ago made, the suffix of the
    user's pass's hold or None) as cancelled bookings. `next_seq` is the frontier, so
    the admitter has nobody left to admit and leaves the plant as it is."""
    onsale = f"os{show}-0a0d17ed"
    conn = await cluster.pg("north")
    try:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO onsale (id, show_ids, opens_at, sale_at, window_s, max_party, "
                "created_at, next_seq, seed, n_early, sealed_at, frontier) VALUES ($1, $2, "
                "now() - interval '1 hour', now() - interval '1 hour', 600, 2, "
                "now() - interval '1 hour', $3, 0, 0, now() - interval '1 hour', $3)",
                onsale, [show], frontier)
            await conn.execute("INSERT INTO onsale_show (show_id, onsale_id) VALUES ($1, $2)",
                               show, onsale)
            for seq, user in enumerate(queue):
                await conn.execute("INSERT INTO onsale_join (onsale_id, seq, user_id) "
                                   "VALUES ($1, $2, $3)", onsale, seq, user)
            if frontier:
                await conn.execute("INSERT INTO onsale_admit (onsale_id, frontier, at) "
                                   "VALUES ($1, $2, now() - interval '10 s')", onsale, frontier)
            for suffix, user, ago, passed in holds:
                await conn.execute(
                    "INSERT INTO booking (id, user_id, show_id, status, fence_token, "
                    "amount_paise, created_at, expires_at, hold_deadline) VALUES ($1, $2, $3, "
                    "'CANCELLED', 1, 0, now() - make_interval(secs => $4), now() + "
                    "interval '10 min', now() + interval '10 min')",
                    f"b{show}-{suffix}", user, show, float(ago))
                if passed == suffix:
                    await conn.execute(
                        "INSERT INTO onsale_pass_use (onsale_id, user_id, booking_id, used_at) "
                        "VALUES ($1, $2, $3, now() - make_interval(secs => $4))",
                        onsale, user, f"b{show}-{suffix}", float(ago))
    finally:
        await conn.close()
    return onsale


async def test_a_normal_onsale_audits_clean(onsale_cluster: Cluster, catalog: Any,
                                            http: aiohttp.ClientSession) -> None:
    """Through the API: an on-sale, three people join, are admitted, two hold with their
    pass (one picks, one best available); the third's hold without a pass is refused."""
    cluster = onsale_cluster
    show = shows_in(cluster, catalog, "north")[0]
    now = datetime.now(UTC)
    operator = {"Authorization": f"Bearer {mint(cluster.topology, 'op', 600, (OPERATOR,))}"}
    status, created = await call(http, "POST", f"{cluster.node('west')}/ops/onsales",
                                 json={"shows": [show], "sale_at": now.isoformat(),
                                       "opens_at": (now - timedelta(seconds=1)).isoformat()},
                                 headers=operator)
    assert status == 201, created
    onsale = created["id"]
    users = ("fan-a", "fan-b", "fan-c")
    tickets = {}
    for user in users:
        status, joined = await call(http, "POST", f"{cluster.node('south')}/onsales/{onsale}"
                                    "/join", headers=bearer(cluster, user))
        assert status == 200, joined
        tickets[user] = joined["ticket"]
    passes: dict[str, str] = {}
    deadline = time.monotonic() + 20
    while len(passes) < len(users):
        assert time.monotonic() < deadline, passes
        for user in users:
            status, at = await call(http, "GET", f"{cluster.node('west')}/onsales/{onsale}/"
                                    "position", headers={**bearer(cluster, user),
                                                         TICKET_HEADER: tickets[user]})
            assert status == 200, at
            if at["state"] == "admitted":
                passes[user] = at["pass"]
        await asyncio.sleep(0.3)
    await asyncio.sleep(GUARD_REFRESH_S + 0.5)  # every node's hold path knows the on-sale
    url = f"{cluster.node('north')}/booking/seats/{show}"
    status, body = await call(http, "POST", f"{url}/lock", json={"seat_ids": seats_of(
        catalog, show, 2)}, headers={**bearer(cluster, "fan-a"), ADMISSION_HEADER: passes["fan-a"]})
    assert status == 201, body
    status, body = await call(http, "POST", f"{url}/best", json={"count": 2},
                              headers={**bearer(cluster, "fan-b"),
                                       ADMISSION_HEADER: passes["fan-b"]})
    assert status == 201, body
    status, body = await call(http, "POST", f"{url}/lock", json={"seat_ids": seats_of(
        catalog, show, 6)[5:]}, headers=bearer(cluster, "fan-c"))
    assert (status, body["error"]) == (403, "admission_required")
    report = await run_audit(cluster.topology)
    assert report.violations == [] and report.exit_code == 0, report.violations


async def test_a_hold_without_a_pass_is_found(onsale_cluster: Cluster, catalog: Any) -> None:
    show = shows_in(onsale_cluster, catalog, "north")[0]
    onsale = await plant_onsale(onsale_cluster, show, ["ok"], 1,
                                [("0" * 16, "ok", 5, "0" * 16), ("1" * 16, "sneak", 5, None)])
    assert only(await run_audit(onsale_cluster.topology)) == Violation(
        "unadmitted_hold", "north", show, None,
        f"hold b{show}-{'1' * 16} of sneak in on-sale {onsale} without an admission pass")


async def test_a_pass_used_out_of_queue_order_is_found(onsale_cluster: Cluster,
                                                       catalog: Any) -> None:
    show = shows_in(onsale_cluster, catalog, "north")[0]
    await plant_onsale(onsale_cluster, show, ["first", "second"], 1,
                       [("0" * 16, "first", 5, "0" * 16), ("1" * 16, "second", 5, "1" * 16)])
    found = only(await run_audit(onsale_cluster.topology))
    assert (found.check, found.show_id) == ("admission_order", show)
    assert found.detail.startswith(f"second (hold b{show}-{'1' * 16}")
    assert "at place 2 used a pass" in found.detail and "never admitted" in found.detail


async def test_a_user_admitted_twice_at_once_is_found(onsale_cluster: Cluster,
                                                      catalog: Any) -> None:
    show = shows_in(onsale_cluster, catalog, "north")[0]
    onsale = await plant_onsale(onsale_cluster, show, ["twice"], 1,
                                [("0" * 16, "twice", 5, "0" * 16), ("1" * 16, "twice", 3, None)])
    assert only(await run_audit(onsale_cluster.topology)) == Violation(
        "admitted_twice", "north", show, None,
        f"twice held b{show}-{'1' * 16} in on-sale {onsale} while the hold of their pass, "
        f"b{show}-{'0' * 16}, ran")
