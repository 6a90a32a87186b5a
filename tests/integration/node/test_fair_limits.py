"""Fair admission and limits on every route, on a north node of its own with tight limits.

One user's flood of writes fills only that user's share of the node (the rest is refused
before it queues), so other users' holds on the node still succeed; token reads are
limited per user and per address; bad tokens and unsigned webhooks per address; many
accounts behind one address meet the per-address hold caps. Other addresses come
through a peer's signed forward header, as a home node sees them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio

from bookcluster.node.forward import CLIENT_HEADER, FORWARDED_HEADER
from bookcluster.topology.model import Endpoint
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.support import Session, bearer, call, free_ports, metric

# The node admits 4 writes at once and queues 64 (a production node: 64 and 2,048), so
# a flood of one user that would fill its queue needs 400 writes, not the report's 2,500.
SLOTS, QUEUE = 4, 64
FLOOD = 400  # writes of one user at once
OTHERS = 20  # other users' holds sent behind the flood, each from its own address
STRICT = {
    "user_writes_at_once: 64": "user_writes_at_once: 8",
    "seats_per_show_per_address: 1000000": "seats_per_show_per_address: 6",
    "holds_per_address: 1000000": "holds_per_address: 3",
    "user_reads: {per_second: 100000, burst: 100000}": "user_reads: {per_second: 2, burst: 10}",
    "ip_rejects: {per_second: 100000, burst: 100000}": "ip_rejects: {per_second: 2, burst: 10}",
}


@pytest_asyncio.fixture(scope="module")
async def strict(cluster: Cluster, run_dir: Path) -> AsyncIterator[str]:
    """URL of an extra north node whose topology has the tight limits above, with a
    small write admission."""
    text = cluster.topology.path.read_text()
    for old, new in STRICT.items():
        assert old in text, old
        text = text.replace(old, new)
    path = run_dir / "topology-fair-limits.yaml"
    path.write_text(text)
    port = free_ports(1)[0]
    child = await cluster.launcher.start_extra_node("north", Endpoint("127.0.0.1", port),
                                                    ["--topology", str(path),
                                                     "--write-slots", str(SLOTS),
                                                     "--write-queue", str(QUEUE)])
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        cluster.launcher.stop_child(child.spec.name)


def vouched(address: str, method: str, path_qs: str) -> dict[str, str]:
    """The headers of a peer node's forward of a request from `address`."""
    assert Session.topology is not None
    secret = Session.topology.secrets.get("forward_secret").encode()
    at = str(int(time.time()))
    mac = hmac.new(secret, f"{address} {at} {method} {path_qs}".encode(),
                   hashlib.sha256).hexdigest()
    return {FORWARDED_HEADER: "west", CLIENT_HEADER: f"{address} {at} {mac}"}


async def hold_from(http: aiohttp.ClientSession, node: str, address: str, show: int,
                    user: str, seats: list[str]) -> tuple[int, Any]:
    path = f"/booking/seats/{show}/lock"
    return await call(http, "POST", node + path, json={"seat_ids": seats}, user=user,
                      headers=vouched(address, "POST", path))


async def test_one_users_flood_leaves_other_users_holds_alone(
        clean: Cluster, strict: str, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[0]
    seats = seats_of(catalog, show, OTHERS)
    missing = f"{strict}/booking/booking/b{show}-0000000000000000/extend"
    start = asyncio.Event()

    async def flood() -> tuple[int, str]:
        await start.wait()
        async with http.post(missing, headers=bearer("flooder")) as resp:
            body = await resp.json()
            return resp.status, body.get("limit") or body["error"]

    async def other(i: int) -> tuple[int, Any]:
        await start.wait()
        return await hold_from(http, strict, f"198.51.100.{i + 1}", show, f"other-{i}",
                               [seats[i]])

    floods = [asyncio.ensure_future(flood()) for _ in range(FLOOD)]
    others = [asyncio.ensure_future(other(i)) for i in range(OTHERS)]  # sent behind it
    await asyncio.sleep(0)
    start.set()
    flooded = Counter(await asyncio.wait_for(asyncio.gather(*floods), 60))
    held = await asyncio.wait_for(asyncio.gather(*others), 60)
    print(f"flood of {FLOOD}: {dict(flooded)}; others: "
          f"{dict(Counter(status for status, _ in held))}")
    assert all(status == 201 for status, _ in held), held
    # The flood got its share: each write found nothing (404) or was refused (429),
    # most of them before taking a place in the node's queue.
    assert set(flooded) <= {(404, "not_found"), (429, "user_writes"),
                            (429, "user_writes_at_once")}, flooded
    assert flooded[(429, "user_writes_at_once")] > 0, flooded
    assert await metric(http, strict, "bookcluster_writes_shed_total") == 0
    for status, body in held:
        status, _ = await call(http, "POST",
                               f"{strict}/booking/booking/{body['booking_id']}/cancel")
        assert status == 200


async def test_many_users_behind_one_address_fill_only_its_turns(
        clean: Cluster, strict: str, http: aiohttp.ClientSession, catalog: Any) -> None:
    """FLOOD users from one address (127.0.0.1), one write each, fill the node's queue;
    holds from other addresses sent behind them push their way in and take turns."""
    show = shows_in(clean, catalog, "north")[0]
    seats = seats_of(catalog, show, OTHERS)
    missing = f"{strict}/booking/booking/b{show}-0000000000000000/extend"
    start = asyncio.Event()

    async def crowd(i: int) -> tuple[int, str]:
        await start.wait()
        async with http.post(missing, headers=bearer(f"crowd-{i}")) as resp:
            return resp.status, (await resp.json())["error"]

    async def other(i: int) -> tuple[int, Any]:
        await start.wait()
        return await hold_from(http, strict, f"192.0.2.{i + 1}", show, f"apart-{i}",
                               [seats[i]])

    crowds = [asyncio.ensure_future(crowd(i)) for i in range(FLOOD)]
    others = [asyncio.ensure_future(other(i)) for i in range(OTHERS)]
    await asyncio.sleep(0)
    start.set()
    crowded = Counter(await asyncio.wait_for(asyncio.gather(*crowds), 60))
    held = await asyncio.wait_for(asyncio.gather(*others), 60)
    print(f"{FLOOD} users of one address: {dict(crowded)}; others: "
          f"{dict(Counter(status for status, _ in held))}")
    assert all(status == 201 for status, _ in held), held
    assert set(crowded) <= {(404, "not_found"), (503, "overloaded")}, crowded


async def test_many_accounts_behind_one_address_meet_the_address_caps(
        clean: Cluster, strict: str, http: aiohttp.ClientSession, catalog: Any) -> None:
    """Caps as the strict node sets them: 6 seats of a show, 3 holds per address."""
    first, second = shows_in(clean, catalog, "north")[:2]
    seats, more = seats_of(catalog, first, 12), seats_of(catalog, second, 12)
    address = "203.0.113.9"
    status, _ = await hold_from(http, strict, address, first, "acct-1", seats[:4])
    assert status == 201
    status, body = await hold_from(http, strict, address, first, "acct-2", seats[4:7])
    assert (status, body["error"], body["limit"], body["max"]) == (
        409, "hold_limit_reached", "seats_per_show_per_address", 6), body
    status, _ = await hold_from(http, strict, address, first, "acct-2", seats[4:6])
    assert status == 201  # 6 seats now
    status, _ = await hold_from(http, strict, address, second, "acct-3", more[:1])
    assert status == 201  # 3 holds now
    status, body = await hold_from(http, strict, address, second, "acct-4", more[1:2])
    assert (status, body["limit"]) == (409, "holds_per_address"), body
    # Another address (and the same accounts from it) are not affected.
    status, body = await hold_from(http, strict, "203.0.113.10", second, "acct-4", more[1:3])
    assert status == 201, body
    rows = await clean.fetch("north", "SELECT client_address, count(*) AS n FROM booking "
                             "WHERE status = 'INITIATED' GROUP BY 1 ORDER BY 1")
    assert [tuple(r) for r in rows] == [("203.0.113.10", 1), ("203.0.113.9", 3)]


async def test_token_reads_are_limited_per_user_and_the_list_shows_own_writes(
        clean: Cluster, strict: str, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[0]
    answers = await asyncio.gather(*(call(http, "GET", f"{strict}/me/bookings", user="reader")
                                     for _ in range(30)))
    statuses = Counter(status for status, _ in answers)
    assert set(statuses) == {200, 429} and statuses[200] <= 12, statuses
    assert {b["limit"] for s, b in answers if s == 429} == {"user_reads"}
    booking = f"{strict}/booking/booking/b{show}-0000000000000000"
    answers = await asyncio.gather(*(call(http, "GET", booking, user="reader")
                                     for _ in range(20)))
    assert {(s, b.get("limit")) for s, b in answers} <= {(404, None), (429, "user_reads")}
    assert any(s == 429 for s, _ in answers), answers
    # Another user reads on; their list (cached a moment) shows their own new hold.
    status, before = await call(http, "GET", f"{strict}/me/bookings", user="lister")
    assert status == 200 and before["bookings"] == []
    status, held = await call(http, "POST", f"{strict}/booking/seats/{show}/lock",
                              json={"seat_ids": seats_of(catalog, show, 1)}, user="lister")
    assert status == 201, held
    status, after = await call(http, "GET", f"{strict}/me/bookings", user="lister")
    assert status == 200 and [b["booking_id"] for b in after["bookings"]] == [
        held["booking_id"]], after


async def test_bad_tokens_and_unsigned_webhooks_are_limited_per_address(
        strict: str, http: aiohttp.ClientSession) -> None:
    async def bad_token() -> tuple[int, Any]:
        return await call(http, "GET", f"{strict}/me/bookings",
                          headers={"Authorization": "Bearer not.a.token"})

    async def unsigned() -> tuple[int, Any]:
        return await call(http, "POST", f"{strict}/payments/webhook", anonymous=True,
                          json={"event_id": "e1"})

    for attempt, codes in ((bad_token, {401: "unauthorized"}),
                           (unsigned, {400: "missing_signature"})):
        answers = [await attempt() for _ in range(20)]
        statuses = Counter(status for status, _ in answers)
        assert set(statuses) == {*codes, 429}, answers
        assert {b["error"] for s, b in answers if s != 429} == set(codes.values())
        assert {b["limit"] for s, b in answers if s == 429} == {"ip_rejects"}
        retry = max(int(b["retry_after_s"]) for s, b in answers if s == 429)
        await asyncio.sleep(retry)  # the address's bucket refills: refused for its token
        assert (await attempt())[0] in codes
        await asyncio.sleep(retry)
    # A token this node verified before passes even while the address is over the limit.
    assert (await call(http, "GET", f"{strict}/me/bookings", user="known"))[0] == 200
    for _ in range(15):
        await bad_token()
    assert (await bad_token())[0] == 429
    assert (await call(http, "GET", f"{strict}/me/bookings", user="known"))[0] == 200
