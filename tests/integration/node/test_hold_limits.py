"""A hold takes its write rate-limit tokens inside its hold script (one round trip):
the same buckets, counts and answers as when the limits ran before it.

On a north node of its own whose buckets refill too slowly to matter within a test
(one token in 100 s): a user's `burst` holds go through, whatever their outcome (a
conflict, an invalid body and a replay count as they did), and the next is 429 with
Retry-After, holds nothing and is refused again on the node without a Redis call; an
address's bucket likewise. Other addresses come through a peer's signed forward
header, as a home node sees them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio

from bookcluster.seats import keys
from bookcluster.seats.scripts import HOLD_LIMITED, TOKEN_BUCKET
from bookcluster.stores.connections import make_redis
from bookcluster.topology.model import Endpoint
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_fair_limits import vouched
from tests.integration.support import bearer, free_ports, metric

USER_BURST, ADDRESS_BURST = 5, 8
TIGHT = {
    "user_writes: {per_second: 50, burst: 100}":
        f"user_writes: {{per_second: 0.01, burst: {USER_BURST}}}",
    "ip_writes: {per_second: 100000, burst: 100000}":
        f"ip_writes: {{per_second: 0.01, burst: {ADDRESS_BURST}}}",
}


@pytest_asyncio.fixture(scope="module")
async def tight(cluster: Cluster, run_dir: Path) -> AsyncIterator[str]:
    """URL of an extra north node whose write buckets barely refill."""
    text = cluster.topology.path.read_text()
    for old, new in TIGHT.items():
        assert old in text, old
        text = text.replace(old, new)
    path = run_dir / "topology-hold-limits.yaml"
    path.write_text(text)
    port = free_ports(1)[0]
    child = await cluster.launcher.start_extra_node("north", Endpoint("127.0.0.1", port),
                                                    ["--topology", str(path)])
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        cluster.launcher.stop_child(child.spec.name)


def address() -> str:
    """A client address no other test uses (IPv6 documentation prefix)."""
    return f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"


async def hold(http: aiohttp.ClientSession, node: str, show: int, user: str, where: str,
               body: Any, key: str | None = None) -> tuple[int, Any, str | None]:
    path = f"/booking/seats/{show}/lock"
    headers = {**bearer(user), **vouched(where, "POST", path)}
    if key is not None:
        headers["Idempotency-Key"] = key
    async with http.post(node + path, json=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers.get("Retry-After")


async def test_a_users_holds_take_one_token_each_whatever_their_outcome(
        clean: Cluster, tight: str, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[0]
    a, b, c, d = seats_of(catalog, show, 4)
    user, where = f"limited-{uuid.uuid4().hex[:8]}", address()
    outcomes = [
        await hold(http, tight, show, user, where, {"seat_ids": [a]}, key="first"),
        await hold(http, tight, show, user, where, {"seat_ids": [a]}, key="first"),  # replay
        # A conflict (keyed: no turn on the node, whose refusal would take no token).
        await hold(http, tight, show, user, where, {"seat_ids": [a, b]}, key="second"),
        await hold(http, tight, show, user, where, {"seat_ids": ["no such seat"]}),
        await hold(http, tight, show, user, where, {"seat_ids": [b]}),
    ]
    assert [status for status, _, _ in outcomes] == [201, 201, 409, 422, 201], outcomes
    assert outcomes[2][1]["error"] == "seats_unavailable", outcomes[2]
    assert len(outcomes) == USER_BURST
    # The bucket is empty: the next hold is refused and holds nothing.
    status, body, retry_after = await hold(http, tight, show, user, where, {"seat_ids": [c]})
    assert (status, body["error"], body["limit"]) == (429, "rate_limited", "user_writes"), body
    assert retry_after is not None and 1 <= int(retry_after) <= 100, retry_after
    # Refused again by the node's memory, also as a keyed hold and with a bad body.
    for again in ({"seat_ids": [d]}, {"seat_ids": "not a list"}):
        status, body, retry_after = await hold(http, tight, show, user, where, again, "k2")
        assert (status, body["limit"]) == (429, "user_writes") and retry_after, body
    redis = make_redis(clean.topology.region("north").redis_master, clean.topology.secrets)
    try:
        holds = await redis.hgetall(keys.show_holds(show))
        bucket = await redis.hget(keys.rate_bucket("user", user), "tokens")
    finally:
        await redis.aclose()
    assert c not in holds and d not in holds and {a, b} <= set(holds), holds
    assert float(bucket) < 1, bucket
    rows = await clean.fetch("north", "SELECT count(*) AS n FROM booking WHERE user_id = $1",
                             user)
    assert rows[0]["n"] == 2
    assert await metric(http, tight, "bookcluster_limit_refusals_total",
                        limit="user_writes") >= 3
    # Another user from the same address still holds (its bucket has tokens left).
    status, body, _ = await hold(http, tight, show, f"other-{uuid.uuid4().hex[:8]}", where,
                                 {"seat_ids": [c]})
    assert status == 201, body


async def test_an_addresss_holds_take_its_tokens_across_users(
        clean: Cluster, tight: str, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[1]
    seats = seats_of(catalog, show, ADDRESS_BURST + 1)
    where = address()
    statuses = []
    for i, seat in enumerate(seats[:ADDRESS_BURST]):
        # Every other hold conflicts with the one before it: it takes a token too.
        wanted = seat if i % 2 == 0 else seats[i - 1]
        status, body, _ = await hold(http, tight, show, f"a{i}-{uuid.uuid4().hex[:8]}", where,
                                     {"seat_ids": [wanted]}, key=f"k{i}")
        statuses.append(status)
    assert statuses == [201, 409] * (ADDRESS_BURST // 2), statuses
    user = f"late-{uuid.uuid4().hex[:8]}"
    status, body, retry_after = await hold(http, tight, show, user, where,
                                           {"seat_ids": [seats[-1]]})
    assert (status, body["error"], body["limit"]) == (429, "rate_limited", "ip_writes"), body
    assert retry_after is not None and int(retry_after) >= 1
    # The refused hold still took the user's token, as the separate limit calls did.
    redis = make_redis(clean.topology.region("north").redis_master, clean.topology.secrets)
    try:
        user_tokens = float(await redis.hget(keys.rate_bucket("user", user), "tokens"))
        assert await redis.hget(keys.show_holds(show), seats[-1]) is None
    finally:
        await redis.aclose()
    assert USER_BURST - 1 <= user_tokens < USER_BURST, user_tokens
    # A user from another address is not limited by this one's bucket.
    status, body, _ = await hold(http, tight, show, user, address(), {"seat_ids": [seats[-1]]})
    assert status == 201, body


async def test_hold_limited_counts_a_bucket_as_token_bucket_does(clean: Cluster) -> None:
    """Against the master directly: HOLD_LIMITED's buckets give TOKEN_BUCKET's answers
    call for call, a conflicting hold keeps its tokens, and a refused one holds nothing."""
    redis = make_redis(clean.topology.region("north").redis_master, clean.topology.secrets)
    show, tag = 990001, uuid.uuid4().hex[:8]
    run_hold = redis.register_script(HOLD_LIMITED)
    run_bucket = redis.register_script(TOKEN_BUCKET)
    user_key, addr_key = keys.rate_bucket("user", f"u-{tag}"), keys.rate_bucket("ip", f"i-{tag}")
    twin_key = keys.rate_bucket("user", f"twin-{tag}")
    rates = [0.01, 3, 0.01, 100]

    async def held(booking: str, *seats: str) -> list[Any]:
        return list(await run_hold(
            keys=[*keys.show_keys(show), user_key, addr_key],
            args=[keys.SEAT_CHANGES_CHANNEL, show, booking, 60000, 1, 4_102_444_800_000,
                  *seats, *rates]))

    try:
        answers = [await held(f"b{show}-{tag}01", "A1"), await held(f"b{show}-{tag}02", "A1"),
                   await held(f"b{show}-{tag}03", "A2")]
        twins = [list(await run_bucket(keys=[twin_key], args=[0.01, 3])) for _ in range(4)]
        refused = await held(f"b{show}-{tag}04", "A3")
        assert answers[0][0] == 1 and answers[1] == [0, "A1"] and answers[2][0] == 1, answers
        assert twins[:3] == [[1, 0]] * 3 and twins[3][0] == 0, twins
        assert refused[:2] == [-2, 0] and refused[3] == 1, refused
        assert abs(int(refused[2]) - int(twins[3][1])) <= 1000, (refused, twins)
        assert await redis.hget(keys.show_holds(show), "A3") is None
        assert 96 <= float(await redis.hget(addr_key, "tokens")) < 97  # every call took one
    finally:
        await redis.delete(*keys.show_keys(show), user_key, addr_key, twin_key)
        await redis.aclose()
