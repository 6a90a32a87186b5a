"""On-sales on the session cluster: the queue's order, admission and passes.

Real nodes in three regions and each region's worker (its admitter), real Redis
replicas and PostgreSQL. Each test drops its on-sales afterwards and waits out the
nodes' guard cache, so later tests hold the same shows freely.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import aiohttp
import pytest_asyncio

from bookcluster.booking.onsales import GUARD_REFRESH_S, OnSales
from bookcluster.booking.passes import ADMISSION_HEADER, TICKET_HEADER, AdmissionPass
from bookcluster.catalog import ShowInfo
from bookcluster.loops import cancel_and_wait
from bookcluster.ops.reset import ONSALE_TABLES
from bookcluster.seats.home import HomeRegion
from bookcluster.stores.connections import Connections
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.support import bearer, metric

EARLY = 30


@pytest_asyncio.fixture
async def onsales(clean: Cluster) -> AsyncIterator[Cluster]:
    yield clean
    await drop_onsales(clean)


async def drop_onsales(cluster: Cluster) -> None:
    """Every on-sale's rows gone, and every node's guard forgets them."""
    for region in cluster.topology.regions:
        conn = await cluster.pg(region)
        try:
            await conn.execute(f"TRUNCATE {ONSALE_TABLES}")
        finally:
            await conn.close()
    await asyncio.sleep(GUARD_REFRESH_S + 0.5)


def _iso(t: datetime) -> str:
    return t.isoformat()


async def create(http: aiohttp.ClientSession, node: str, body: dict[str, Any]
                 ) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{node}/ops/onsales", json=body,
                         headers=bearer("onsale-operator", ("operator",))) as resp:
        return resp.status, await resp.json()


async def join(http: aiohttp.ClientSession, node: str, onsale: str, user: str
               ) -> dict[str, Any]:
    async with http.post(f"{node}/onsales/{onsale}/join", headers=bearer(user)) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return body  # type: ignore[no-any-return]


async def position(http: aiohttp.ClientSession, node: str, onsale: str, user: str,
                   ticket: str) -> dict[str, Any]:
    async with http.get(f"{node}/onsales/{onsale}/position",
                        headers={**bearer(user), TICKET_HEADER: ticket}) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return body  # type: ignore[no-any-return]


async def hold(http: aiohttp.ClientSession, node: str, show: int, user: str, seats: list[str],
               admission: str | None = None, key: str | None = None) -> tuple[int, Any]:
    headers = bearer(user)
    if admission is not None:
        headers[ADMISSION_HEADER] = admission
    if key is not None:
        headers["Idempotency-Key"] = key
    async with http.post(f"{node}/booking/seats/{show}/lock", json={"seat_ids": seats},
                         headers=headers) as resp:
        return resp.status, await resp.json()


async def until(check: Any, timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = await check()
        if got or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.2)


def _spearman(xs: list[int], ys: list[int]) -> float:
    n = len(xs)
    d2 = sum((x - y) ** 2 for x, y in zip(xs, ys, strict=True))
    return 1 - 6 * d2 / (n * (n * n - 1))


async def test_the_queue_orders_early_joiners_at_random_and_admits_in_order(
        onsales: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    cluster = onsales
    north, south = shows_in(cluster, catalog, "north"), shows_in(cluster, catalog, "south")
    show, other = north[0], north[1]
    now = datetime.now(UTC)
    body = {"shows": [show], "opens_at": _iso(now - timedelta(seconds=1)),
            "sale_at": _iso(now + timedelta(seconds=10)), "window_s": 120, "max_party": 2}
    # Refused as asked: clear 400s, and one on-sale per show.
    for bad, field in (({**body, "shows": [show, south[0]]}, "shows"),
                       ({**body, "shows": [999999]}, "shows"),
                       ({**body, "opens_at": _iso(now + timedelta(seconds=60))}, "opens_at")):
        status, answer = await create(http, cluster.node("south"), bad)
        assert (status, answer["error"], answer.get("field")) == (400, "invalid_onsale", field)
    status, created = await create(http, cluster.node("west"), body)
    assert status == 201, created
    onsale = created["id"]
    status, again = await create(http, cluster.node("north"), body)
    assert (status, again["error"]) == (409, "onsale_exists")
    status, _ = await create(http, cluster.node("north"), {**body, "shows": [other]})
    assert status == 201

    async def listed() -> bool:
        async with http.get(cluster.node("south", 1) + "/onsales") as resp:
            return onsale in [o["id"] for o in (await resp.json())["onsales"]]
    assert await until(listed), "the on-sale never reached the south replica"

    # Holds without a pass are refused, saying where to queue.
    seats = seats_of(catalog, show)
    status, refused = await hold(http, cluster.node("south"), show, "nopass", seats[:1])
    assert (status, refused["error"], refused["onsale"]) == (403, "admission_required", onsale)
    assert refused["join_url"] == f"/onsales/{onsale}/join"

    # Early joiners, one after another, through every region's nodes.
    users = [f"fan{i:02d}-{uuid.uuid4().hex[:6]}" for i in range(EARLY)]
    tickets = {}
    for i, user in enumerate(users):
        node = cluster.nodes()[i % len(cluster.nodes())]
        tickets[user] = (await join(http, node, onsale, user))["ticket"]
    twice = await join(http, cluster.node("west", 1), onsale, users[0])
    assert twice["ticket"] == tickets[users[0]] and twice["joined_before"]
    early = await position(http, cluster.node("south"), onsale, users[0], tickets[users[0]])
    assert (early["state"], early["place"]) == ("waiting", None)
    rows = await cluster.fetch("north", "SELECT user_id, seq FROM onsale_join WHERE "
                               "onsale_id = $1 ORDER BY seq", onsale)
    assert [r["user_id"] for r in rows] == users  # the order is recorded: join order

    assert datetime.now(UTC) < now + timedelta(seconds=10), "joins took past sale_at"
    await asyncio.sleep(max(0.0, 10.5 - (datetime.now(UTC) - now).total_seconds()))
    late = f"late-{uuid.uuid4().hex[:6]}"
    tickets[late] = (await join(http, cluster.node("south"), onsale, late))["ticket"]

    async def all_admitted() -> dict[str, dict[str, Any]] | None:
        got = {u: await position(http, cluster.nodes()[i % 6], onsale, u, t)
               for i, (u, t) in enumerate(tickets.items())}
        return got if all(p["state"] == "admitted" for p in got.values()) else None
    answers = await until(all_admitted, 20.0)
    assert answers, "not everyone was admitted"
    places = [answers[u]["place"] for u in users]
    assert sorted(places) == list(range(1, EARLY + 1))
    assert answers[late]["place"] == EARLY + 1  # behind every early joiner
    # Arriving first gives no advantage: join order and place are not correlated (a fair
    # shuffle of 30 exceeds |rho| 0.6 about once in 2,000 draws; the identity gives 1).
    assert abs(_spearman(list(range(1, EARLY + 1)), places)) < 0.6, places

    # Admission followed the order: a later place was never admitted before an earlier one.
    secret = cluster.topology.secrets.get("forward_secret")
    passes = {u: AdmissionPass.verify(secret, a["pass"]) for u, a in answers.items()}
    by_place = sorted(passes.values(), key=lambda p: p.place)
    assert [p.expires_at for p in by_place] == sorted(p.expires_at for p in by_place)
    steps = await cluster.fetch("north", "SELECT frontier FROM onsale_admit WHERE "
                                "onsale_id = $1 ORDER BY at, frontier", onsale)
    assert [s["frontier"] for s in steps] == sorted(s["frontier"] for s in steps)
    worker = f"http://{cluster.topology.region('north').worker}"

    async def counted() -> bool:  # the worker counts just after it publishes
        return (await metric(http, worker, "bookcluster_onsale_admitted_total",
                             onsale=onsale) == EARLY + 1
                and await metric(http, worker, "bookcluster_onsale_waited_seconds_count",
                                 onsale=onsale) == EARLY + 1
                and await metric(http, worker, "bookcluster_onsale_queue_length",
                                 onsale=onsale) == 0)
    assert await until(counted, 5.0)

    # Passes in the hold path.
    a, b = users[0], users[1]
    node = cluster.node("west")  # forwarded to north with the pass
    pass_a, pass_b = answers[a]["pass"], answers[b]["pass"]
    status, got = await hold(http, node, show, b, seats[:3], pass_b)
    assert (status, got["error"]) == (403, "admission_party_too_large")
    status, got = await hold(http, node, show, b, seats[:1], pass_a)
    assert (status, got["error"]) == (403, "admission_not_yours")
    status, got = await hold(http, node, other, a, seats_of(catalog, other)[:1], pass_a)
    assert (status, got["error"]) == (403, "admission_wrong_show")
    forged = pass_a[:-1] + ("0" if pass_a[-1] != "0" else "1")
    status, got = await hold(http, node, show, a, seats[:1], forged)
    assert (status, got["error"]) == (403, "admission_forged")
    expired = AdmissionPass(onsale, a, (show,), 2, 0, time.time() - 1).sign(secret)
    status, got = await hold(http, node, show, a, seats[:1], expired)
    assert (status, got["error"]) == (403, "admission_expired")
    status, held = await hold(http, node, show, a, seats[:2], pass_a, key="k1")
    assert status == 201, held
    status, retried = await hold(http, cluster.node("north"), show, a, seats[:2], pass_a,
                                 key="k1")
    assert (status, retried["booking_id"]) == (201, held["booking_id"])  # a retry, not a replay
    status, got = await hold(http, node, show, a, seats[2:3], pass_a)
    assert (status, got["error"]) == (403, "admission_used")
    # A hold the seats refuse gives the pass back.
    status, got = await hold(http, node, show, b, seats[:1], pass_b)
    assert (status, got["error"]) == (409, "seats_unavailable")
    status, got = await hold(http, node, show, b, seats[4:6], pass_b)
    assert status == 201, got
    # A claim whose hold never reached PostgreSQL (its node died in between) lapses.
    c = users[2]
    await cluster.fetch("north", "INSERT INTO onsale_pass_use (onsale_id, user_id, "
                        "booking_id, used_at) VALUES ($1, $2, 'b1-00000000deadbeef', "
                        "now() - interval '30 seconds')", onsale, c)
    status, got = await hold(http, node, show, c, seats[6:7], answers[c]["pass"])
    assert (status, got["error"]) == (403, "admission_used")  # not yet: it may still land
    await cluster.fetch("north", "UPDATE onsale_pass_use SET used_at = now() - interval "
                        "'2 minutes' WHERE onsale_id = $1 AND user_id = $2", onsale, c)
    status, got = await hold(http, node, show, c, seats[6:7], answers[c]["pass"])
    assert status == 201, got
    held_c = got["booking_id"]
    # Best available takes the same pass, in the same hold path.
    d = users[3]
    async with http.post(f"{node}/booking/seats/{show}/best", json={"count": 2},
                         headers=bearer(d)) as resp:
        got = await resp.json()
        assert (resp.status, got["error"]) == (403, "admission_required"), got
    async with http.post(f"{node}/booking/seats/{show}/best", json={"count": 3},
                         headers={**bearer(d), ADMISSION_HEADER: answers[d]["pass"]}) as resp:
        got = await resp.json()
        assert (resp.status, got["error"]) == (403, "admission_party_too_large"), got
    async with http.post(f"{node}/booking/seats/{show}/best", json={"count": 2},
                         headers={**bearer(d), ADMISSION_HEADER: answers[d]["pass"]}) as resp:
        got = await resp.json()
        assert resp.status == 201 and len(got["seats"]) == 2, got
    async with http.post(f"{node}/booking/seats/{show}/best", json={"count": 1},
                         headers={**bearer(d), ADMISSION_HEADER: answers[d]["pass"]}) as resp:
        got = await resp.json()
        assert (resp.status, got["error"]) == (403, "admission_used"), got
    used = await cluster.fetch("north", "SELECT user_id, booking_id FROM onsale_pass_use "
                               "WHERE onsale_id = $1", onsale)
    assert {r["user_id"]: r["booking_id"] for r in used}[c] == held_c
    assert sorted(r["user_id"] for r in used) == sorted([a, b, c, d])

    # Waits and abandonment, as metrics and in the list: every admission step moved an
    # hour back (as if the shopping windows had passed), the admitted who never held
    # (all but those four) abandoned.
    await cluster.fetch("north", "UPDATE onsale_admit SET at = at - interval '1 hour' "
                        "WHERE onsale_id = $1", onsale)
    gone = EARLY + 1 - 4

    async def abandonment() -> bool:
        return await metric(http, worker, "bookcluster_onsale_abandoned",
                            onsale=onsale) == gone
    assert await until(abandonment, 5.0)
    p50 = await metric(http, worker, "bookcluster_onsale_wait_p50_seconds", onsale=onsale)
    p99 = await metric(http, worker, "bookcluster_onsale_wait_p99_seconds", onsale=onsale)
    assert 0 <= p50 <= p99 < 120, (p50, p99)

    async def summary() -> dict[str, Any] | None:
        async with http.get(cluster.node("south") + "/onsales") as resp:
            found = [o["queue"] for o in (await resp.json())["onsales"] if o["id"] == onsale]
        return found[0] if found and found[0]["abandoned"] == gone else None
    queue = await until(summary, 5.0)
    assert queue and queue["wait_p50_s"] <= queue["wait_p99_s"] < 120, queue


async def test_sold_out_is_told_to_everyone_and_lapsed_holds_resume_admission(
        onsales: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    cluster = onsales
    show = shows_in(cluster, catalog, "north")[0]
    seats = seats_of(catalog, show)
    free = seats[:2]
    # Every seat but two sold (as PostgreSQL decides: the admitter counts its rows).
    conn = await cluster.pg("north")
    try:
        await conn.execute("UPDATE show_seat SET status = 'BOOKED', booked_booking_id = "
                           "'sold-elsewhere' WHERE show_id = $1 AND status = 'AVAILABLE' "
                           "AND seat_id <> ALL($2::text[])", show, free)
    finally:
        await conn.close()
    now = datetime.now(UTC)
    status, created = await create(http, cluster.node("north"), {
        "shows": [show], "opens_at": _iso(now - timedelta(seconds=1)),
        "sale_at": _iso(now + timedelta(seconds=2)), "window_s": 60, "max_party": 2})
    assert status == 201, created
    onsale = created["id"]
    users = [f"so{i}-{uuid.uuid4().hex[:6]}" for i in range(5)]
    tickets = {u: (await join(http, cluster.node("south"), onsale, u))["ticket"]
               for u in users}

    async def states() -> dict[str, dict[str, Any]]:
        return {u: await position(http, cluster.node("west"), onsale, u, t)
                for u, t in tickets.items()}

    async def two_admitted() -> dict[str, dict[str, Any]] | None:
        got = await states()
        admitted = [u for u, p in got.items() if p["state"] == "admitted"]
        return got if len(admitted) == 2 else None
    got = await until(two_admitted)
    assert got, "two shoppers for two seats were not admitted"
    admitted = sorted((u for u, p in got.items() if p["state"] == "admitted"),
                      key=lambda u: got[u]["place"])
    assert {got[u]["place"] for u in admitted} == {1, 2}
    waiting = sorted((u for u in users if u not in admitted), key=lambda u: got[u]["place"])
    assert [got[u]["place"] for u in waiting] == [3, 4, 5]
    # The next two in line watch their place over the WebSocket of a node in another
    # region (a forged ticket gets no socket).
    live = cluster.node("west", 1) + f"/onsales/{onsale}/live"
    async with http.get(f"{live}?ticket={tickets[users[0]][:-4]}abcd") as resp:
        assert resp.status == 403 and (await resp.json())["error"] == "ticket_invalid"
    pushed: dict[str, list[dict[str, Any]]] = {u: [] for u in waiting[:2]}

    async def listen(user: str) -> None:
        async with http.ws_connect(f"{live}?ticket={tickets[user]}") as ws:
            async for message in ws:
                pushed[user].append(json.loads(message.data))
    listeners = [asyncio.create_task(listen(u)) for u in pushed]
    # The first shopper holds both seats through the node whose holds last 1.5 s.
    status, held = await hold(http, cluster.short_ttl_node, show, admitted[0], free,
                              got[admitted[0]]["pass"])
    assert status == 201, held
    # The second's pass is unused: still an active shopper. When the hold lapses the
    # seats are free again, and room for one more shopper opens: admission resumes.

    async def third_admitted() -> bool:
        return (await position(http, cluster.node("west"), onsale, waiting[0],
                               tickets[waiting[0]]))["state"] == "admitted"
    # Before the hold lapsed nobody else was admitted (2 seats, 2 shoppers).
    assert (await position(http, cluster.node("west"), onsale, waiting[0],
                           tickets[waiting[0]]))["state"] == "waiting"
    assert await until(third_admitted, 20.0), "admission did not resume after the lapse"
    # The last two seats sell (as PostgreSQL decides): sold out for everyone waiting.
    conn = await cluster.pg("north")
    try:
        await conn.execute("UPDATE show_seat SET status = 'BOOKED', hold_booking_id = NULL, "
                           "hold_expires_at = NULL, booked_booking_id = 'sold-elsewhere' "
                           "WHERE show_id = $1 AND seat_id = ANY($2)", show, free)
    finally:
        await conn.close()

    async def sold_out() -> bool:
        return all([(await position(http, node, onsale, u, tickets[u]))["state"] == "sold_out"
                    for u, node in zip(waiting[1:], cluster.nodes()[::2], strict=False)])
    assert await until(sold_out, 10.0), "the waiting users were not told it sold out"

    async def pushed_sold_out() -> bool:
        return bool(pushed[waiting[1]]) and pushed[waiting[1]][-1].get("state") == "sold_out"
    assert await until(pushed_sold_out, 5.0), pushed
    await cancel_and_wait(listeners)
    # Its own position first; admitted with the pass when the queue reached it.
    first, then = pushed[waiting[0]][0], pushed[waiting[0]][1]
    assert (first["type"], first["state"], first["place"]) == ("position", "waiting", 3)
    assert (then["type"], then["state"]) == ("position", "admitted") and then["pass"]
    # The one behind: the shared count when the queue moved, then sold out.
    kinds = [(m["type"], m.get("state"), m.get("admitted")) for m in pushed[waiting[1]]]
    assert kinds[0] == ("position", "waiting", 2) and pushed[waiting[1]][0]["place"] == 4
    assert ("queue", None, 3) in kinds and kinds[-1] == ("position", "sold_out", 3), kinds
    assert len(kinds) <= 4, kinds  # pushed when the queue moved, not every round

async def test_joins_arriving_together_are_batched_each_with_its_own_answer(
        onsales: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    cluster = onsales
    show = shows_in(cluster, catalog, "north")[2]
    now = datetime.now(UTC)
    status, created = await create(http, cluster.node("north"), {
        "shows": [show], "opens_at": _iso(now - timedelta(seconds=1)),
        "sale_at": _iso(now + timedelta(seconds=60)), "window_s": 60, "max_party": 2})
    assert status == 201, created
    onsale = created["id"]
    conn = await cluster.pg("north")
    try:
        # The batch statement itself: new users numbered in the order given, a user
        # named twice or joined before keeps one number ('again').
        first = await conn.fetch("SELECT * FROM bc_onsale_join_many($1, $2::text[])",
                                 onsale, ["b-a", "b-b", "b-a", "b-c"])
        assert [(r["user_id"], r["seq"], r["state"]) for r in first] == [
            ("b-a", 0, "joined"), ("b-b", 1, "joined"), ("b-a", 0, "again"),
            ("b-c", 2, "joined")]
        second = await conn.fetch("SELECT * FROM bc_onsale_join_many($1, $2::text[])",
                                  onsale, ["b-d", "b-b"])
        assert [(r["user_id"], r["seq"], r["state"]) for r in second] == [
            ("b-d", 3, "joined"), ("b-b", 1, "again")]
        nobody = await conn.fetch("SELECT * FROM bc_onsale_join_many('os1-nope', "
                                  "ARRAY['x', 'y'])")
        assert [(r["user_id"], r["state"]) for r in nobody] == [("x", "not_found"),
                                                              ("y", "not_found")]
        # Many joins at once through one home node (each user twice): one place each,
        # the numbers dense, both answers of a user the same ticket, one 'joined_before'.
        users = [f"burst{i:03d}-{uuid.uuid4().hex[:4]}" for i in range(120)]
        node = cluster.node("north")
        answers = await asyncio.gather(*(join(http, node, onsale, u)
                                         for u in users + users))
        for i, user in enumerate(users):
            a, b = answers[i], answers[i + len(users)]
            assert a["ticket"] == b["ticket"], user
            assert sorted([a["joined_before"], b["joined_before"]]) == [False, True], user
        rows = await conn.fetch("SELECT user_id, seq FROM onsale_join WHERE onsale_id = $1 "
                                "ORDER BY seq", onsale)
        assert [r["seq"] for r in rows] == list(range(4 + len(users)))
        assert sorted(r["user_id"] for r in rows[4:]) == sorted(users)
        assert await conn.fetchval("SELECT next_seq FROM onsale WHERE id = $1",
                                   onsale) == 4 + len(users)
    finally:
        await conn.close()


def _show_info(show: int, region: str) -> ShowInfo:
    return ShowInfo(show, "t", "s", "screen", "m", "movie", "en", "U", 120, datetime.now(UTC),
                    region)


async def test_a_hold_is_never_guarded_by_a_list_read_before_the_onsale_was_made(
        onsales: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    """A node's on-sale list read before `POST /ops/onsales` answered is read again before
    it guards a hold (the medium benchmark's holds without a pass: nodes went on with the
    lists they read before the on-sale, refreshing them only in the background)."""
    cluster = onsales
    show = shows_in(cluster, catalog, "north")[3]
    async with Connections(cluster.topology, "west") as connections:
        guard = OnSales(connections, cast(Any, None), HomeRegion(connections))
        try:
            info = _show_info(show, "north")  # north's list, from a node of west: no loop
            assert await guard.guarding(info) is None  # read now: no on-sale yet
            now = datetime.now(UTC)
            status, created = await create(http, cluster.node("north"), {
                "shows": [show], "opens_at": _iso(now - timedelta(seconds=1)),
                "sale_at": _iso(now + timedelta(seconds=60)), "window_s": 60,
                "max_party": 2})
            assert status == 201, created
            got = await guard.guarding(info)
            assert got is not None and got.id == created["id"]
        finally:
            await guard.close()
