"""Holds under an Idempotency-Key, and one deadline per write: a 503 is true.

A write that was answered 503 either changed nothing (`outcome: not_applied`)
or may still land (`outcome: unknown`, with `lapses_by` for a hold); what lands
late is what the same key's retry gets as its answer, never a second hold.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bookcluster.local import faults
from bookcluster.seats import keys
from bookcluster.stores.connections import make_redis
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_holds import confirm
from tests.integration.support import Session, bearer, call, paid

DEADLINE_S = 2.0  # the whole answer of a write, forwarding included (1.9 s budget)
PAUSE_S = 2.5  # longer than any write's budget


async def keyed_hold(http: aiohttp.ClientSession, node: str, show: int, user: str,
                     seats: list[str], key: str | None) -> tuple[int, Any, bool]:
    """A hold, and whether the answer is a replay of an earlier one."""
    headers = {} if key is None else {"Idempotency-Key": key}
    async with http.post(f"{node}/booking/seats/{show}/lock", json={"seat_ids": seats},
                         headers={**headers, **bearer(user)}) as resp:
        body = await resp.json(content_type=None)
    if resp.status == 201:
        Session.owners[body["booking_id"]] = user  # for `call` and `paid`
    return resp.status, body, resp.headers.get("Idempotent-Replayed") == "true"


@contextmanager
def paused_nodes(cluster: Cluster, region: str) -> Iterator[None]:
    """Every node of a region stopped: requests queue in their sockets."""
    count = len(cluster.topology.region(region).nodes)
    with ExitStack() as stack:
        for i in range(count):
            stack.enter_context(faults.paused(cluster.launcher.child(f"{region}.node.{i + 1}").pid))
        yield


async def redis_holds(cluster: Cluster, region: str, show: int) -> dict[str, str]:
    redis = make_redis(cluster.topology.region(region).redis_master, cluster.topology.secrets)
    try:
        return dict(await redis.hgetall(keys.show_holds(show)))
    finally:
        await redis.aclose()


async def bookings_of(cluster: Cluster, region: str, user: str) -> list[Any]:
    return await cluster.fetch(region, "SELECT id, status FROM booking WHERE user_id = $1",
                               user)


async def test_a_retried_hold_with_its_key_is_the_same_hold(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "west")[0]
    seats = seats_of(catalog, show, 2)
    node = clean.node("west")
    status, first, replayed = await keyed_hold(http, node, show, "ann", seats, "k1")
    assert status == 201 and not replayed, first
    status, again, replayed = await keyed_hold(http, clean.node("north"), show, "ann",
                                               seats, "k1")
    assert status == 201 and replayed and again == first, again
    # Another user's key of the same text is their own.
    status, body, _ = await keyed_hold(http, node, show, "bob", seats, "k1")
    assert status == 409 and body["error"] == "seats_unavailable", body
    # The key on other seats is a client error, and holds nothing.
    other = seats_of(catalog, show, 4)[2:]
    status, body, _ = await keyed_hold(http, node, show, "ann", other, "k1")
    assert status == 422 and body["error"] == "idempotency_key_reused", body
    assert not set(other) & set(await redis_holds(clean, "west", show))
    assert [r["id"] for r in await bookings_of(clean, "west", "ann")] == [first["booking_id"]]
    # Replayed as it is now: cancelled stays cancelled, not held again.
    status, _ = await call(http, "POST", f"{node}/booking/booking/{first['booking_id']}/cancel",
                           user="ann")
    assert status == 200
    status, again, replayed = await keyed_hold(http, node, show, "ann", seats, "k1")
    assert status == 201 and replayed and again["status"] == "CANCELLED", again


async def test_concurrent_attempts_with_one_key_make_one_hold(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "south")[0]
    seats = seats_of(catalog, show, 3)
    nodes = clean.nodes()
    answers = await asyncio.gather(*(keyed_hold(http, nodes[i % len(nodes)], show, "cat",
                                                seats, "same") for i in range(12)))
    assert {status for status, _, _ in answers} == {201}, answers
    assert len({body["booking_id"] for _, body, _ in answers}) == 1, answers
    assert sum(not replayed for _, _, replayed in answers) <= 1
    assert len(await bookings_of(clean, "south", "cat")) == 1


async def test_a_forwarded_hold_to_a_stalled_home_node_is_a_true_503(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    """Every south node stalls past the budget. The north node's 503 says the outcome
    is unknown; the stalled home node, when it wakes, finds the deadline gone and
    does nothing; the retry with the same key then holds, once."""
    show = shows_in(clean, catalog, "south")[1]
    seats = seats_of(catalog, show, 2)
    with paused_nodes(clean, "south"):
        started = time.monotonic()
        status, body, _ = await keyed_hold(http, clean.node("north"), show, "dan", seats, "d1")
        elapsed = time.monotonic() - started
        assert status == 503 and body["outcome"] == "unknown", body
        assert datetime.fromisoformat(body["lapses_by"]) > datetime.now(UTC), body
        assert elapsed <= DEADLINE_S, elapsed
        await asyncio.sleep(PAUSE_S - elapsed)
    await asyncio.sleep(0.5)  # the woken home nodes read the stale request
    assert await bookings_of(clean, "south", "dan") == []
    assert not set(seats) & set(await redis_holds(clean, "south", show))
    status, first, replayed = await keyed_hold(http, clean.node("north"), show, "dan", seats,
                                               "d1")
    assert status == 201 and not replayed, first
    status, again, replayed = await keyed_hold(http, clean.node("west"), show, "dan", seats,
                                               "d1")
    assert status == 201 and replayed and again["booking_id"] == first["booking_id"]
    print(f"forwarded hold, home nodes stalled: 503 in {elapsed * 1000:.0f} ms, nothing held")


async def test_holds_during_a_stalled_primary_get_true_503s(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    """South's primary stalls while holds are on their way. Each answer is true:
    `not_applied` and nothing is left; or `unknown`, and a keyed hold that landed
    is the retry's answer (one booking) while a keyless one is expired by the
    sweeper. (A keyed hold reads its key first, so the stall usually catches it
    before anything was sent.)"""
    show = shows_in(clean, catalog, "south")[2]
    keyed, keyless = seats_of(catalog, show, 4)[:2], seats_of(catalog, show, 4)[2:]
    with faults.paused(clean.launcher.child("south.postgres.1").pid):
        (status, body, _), (keyless_status, keyless_body, _) = await asyncio.gather(
            keyed_hold(http, clean.node("south"), show, "eve", keyed, "e1"),
            keyed_hold(http, clean.node("north"), show, "fay", keyless, None))
        assert status == 503 and body["outcome"] in ("not_applied", "unknown"), body
        assert keyless_status == 503 and keyless_body["outcome"] == "unknown", keyless_body
        assert datetime.fromisoformat(keyless_body["lapses_by"]) > datetime.now(UTC)
        await asyncio.sleep(PAUSE_S)
    if body["outcome"] == "not_applied":
        assert await bookings_of(clean, "south", "eve") == []
    status, retried, replayed = await keyed_hold(http, clean.node("north"), show, "eve",
                                                 keyed, "e1")
    assert status == 201, retried
    assert [r["id"] for r in await bookings_of(clean, "south", "eve")] == \
        [retried["booking_id"]]
    for _ in range(60):  # the sweeper expires the abandoned keyless hold if it landed
        rows = await bookings_of(clean, "south", "fay")
        if all(r["status"] == "EXPIRED" for r in rows):
            break
        await asyncio.sleep(0.1)
    assert all(r["status"] == "EXPIRED" for r in rows), rows
    status, _, _ = await keyed_hold(http, clean.node("north"), show, "gus", keyless, None)
    assert status == 201
    print(f"holds during a stalled primary: keyed {body['outcome']} (retry replayed: "
          f"{replayed}), keyless {keyless_body['outcome']}, {len(rows)} landed and expired")


async def test_a_confirm_answered_503_is_sold_only_as_its_retrys_answer(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "south")[3]
    status, held, _ = await keyed_hold(http, clean.node("south"), show, "hal",
                                       seats_of(catalog, show, 1), None)
    assert status == 201
    booking = held["booking_id"]
    await paid(http, clean.node("north"), booking, "p")  # captured before the stall
    with faults.paused(clean.launcher.child("south.postgres.1").pid):
        task = asyncio.create_task(confirm(http, clean.node("north"), booking, "c1", "p"))
        await asyncio.sleep(PAUSE_S)
        status, body = await task
    if status == 503:
        assert body["outcome"] in ("not_applied", "unknown"), body
        rows = await clean.fetch("south", "SELECT status FROM booking WHERE id = $1", booking)
        if rows[0]["status"] == "CONFIRMED":
            assert body["outcome"] == "unknown", body  # it landed: the 503 said it might
        print(f"confirm during a stalled primary: 503 {body['outcome']}, booking "
              f"{rows[0]['status']} afterwards")
    status, again = await confirm(http, clean.node("north"), booking, "c1", "p")
    assert status == 200 and again["status"] == "CONFIRMED", again
    status, replay = await confirm(http, clean.node("west"), booking, "c1", "p")
    assert (status, replay) == (200, again)
