"""Redis failover under Sentinel, with real processes: a region's master is SIGKILLed
under a hold/confirm load through the nodes of both regions, while readers keep its
shows in every node's cache; then a planned switchover from the CLI, with live sockets
open in both regions.

What must hold: holds are granted again with no human (Sentinel promotes the
region's own replica; nodes and the worker find it); every write is answered (201,
409, or 503 with Retry-After, never a hang); no seat is granted to two users (nor one
PostgreSQL shows held or sold); every confirm answered 200 is CONFIRMED; every node's
seat map converges to PostgreSQL, the audit (node caches included) is clean; the
replica in the other region follows the new master and live sockets in both regions
keep getting changes.

The figures (failover time: kill -> the first hold sent after it that was granted;
what the reconciler repaired at the new generation) are printed; run with `-s`.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from bookcluster.local import faults
from bookcluster.ops.audit import run_audit
from bookcluster.ops.demo_catalog import CITIES, CatalogSpec, build_catalog, slug
from bookcluster.stores import sentinel_api
from bookcluster.stores.probe import scrape_metric
from bookcluster.topology.model import Endpoint
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_mirror import converged
from tests.integration.own_cluster import own_cluster
from tests.integration.support import Session, bearer, paid

REGION = "north"  # whose master fails; "south" reaches it across regions
SPEC = CatalogSpec(theatres_per_city=1, cities_per_region=1, days=1, shows_per_day=2)
LIMITS = """\
  user_writes: {per_second: 100000, burst: 100000}
  ip_writes: {per_second: 100000, burst: 100000}
  ip_reads: {per_second: 100000, burst: 100000}
"""
CUSTOMERS = 8
POOL = 30  # seats of each show the customers compete for (they collide on purpose)
KILL_AFTER = 25  # holds granted before the master is killed
AFTER_RESUME_S = 3.0  # the load goes on this long once holds are granted again
LOAD_DEADLINE_S = 60.0  # every loop here is bounded in time and count
# No write may take this long: during a failover a write is answered 503 within its
# 1.9 s deadline. A client timeout here is a hang, and fails the test.
CLIENT_TIMEOUT_S = 10.0
SETTLE_S = 30.0  # bound on waiting for a server to take its new role
KILL_CYCLES = 4  # the slow variant


@pytest_asyncio.fixture(scope="module")
async def ha() -> AsyncIterator[Cluster]:
    theatres = {f"{slug(CITIES[r][0][0])}-01": r for r in ("north", "south")}
    async with own_cluster("bookcluster-sentinel-", SPEC, regions=("north", "south"),
                           nodes=2, workers=True, theatres=theatres, limits=LIMITS,
                           redis_down_after="1s") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def catalog() -> Any:
    return build_catalog(SPEC, date.today())


# -- where the master is ---------------------------------------------------------


async def master_process(cluster: Cluster) -> str:
    """The launcher's name of the server the sentinels call REGION's master now."""
    found = await sentinel_api.master_of(cluster.topology, REGION)
    return sentinel_api.server_name(cluster.topology, found)


def endpoint_of(cluster: Cluster, name: str) -> Endpoint:
    spec = cluster.launcher.child(name).spec
    return Endpoint(spec.host, spec.port)


async def replication(cluster: Cluster, name: str) -> dict[str, Any]:
    ep = endpoint_of(cluster, name)
    client = aioredis.Redis(host=ep.host, port=ep.port, decode_responses=True,
                            password=cluster.topology.secrets.redis_password,
                            socket_timeout=2, socket_connect_timeout=2)
    try:
        return await client.info("replication")  # type: ignore[no-any-return]
    except (OSError, aioredis.RedisError):
        return {}
    finally:
        await client.aclose()


async def wait_following(cluster: Cluster, name: str, master: str) -> None:
    """Until server `name` replicates from `master`, link up (Sentinel points it there)."""
    want = endpoint_of(cluster, master).port
    deadline = time.monotonic() + SETTLE_S
    info: dict[str, Any] = {}
    while time.monotonic() < deadline:
        info = await replication(cluster, name)
        if info.get("role") == "slave" and info.get("master_port") == want \
                and info.get("master_link_status") == "up":
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name} does not follow {master} after {SETTLE_S}s: {info}")


async def worker_figure(cluster: Cluster, http: aiohttp.ClientSession, name: str) -> float:
    worker = cluster.topology.region(REGION).worker
    return await scrape_metric(http, f"http://{worker}", name)


# -- the load ----------------------------------------------------------------------


@dataclass
class Answer:
    sent: float
    done: float
    status: int  # 0: no answer within CLIENT_TIMEOUT_S (or the connection broke)
    body: Any
    retry_after: str | None


@dataclass
class Load:
    holds: list[tuple[Answer, str, int, str]] = field(default_factory=list)  # user, show, seat
    confirms: dict[str, list[Answer]] = field(default_factory=dict)  # booking -> answers
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def granted(self, after: float = 0.0) -> list[tuple[Answer, str, int, str]]:
        return [h for h in self.holds if h[0].status == 201 and h[0].sent > after]


async def post(http: aiohttp.ClientSession, url: str, user: str, body: dict[str, Any],
               headers: dict[str, str] | None = None) -> Answer:
    sent = time.monotonic()
    try:
        async with http.post(url, json=body, headers={**bearer(user), **(headers or {})},
                             timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)) as resp:
            answer = await resp.json(content_type=None)
            return Answer(sent, time.monotonic(), resp.status, answer,
                          resp.headers.get("Retry-After"))
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Answer(sent, time.monotonic(), 0, repr(exc), None)


async def customer(cluster: Cluster, http: aiohttp.ClientSession, load: Load, tag: str,
                   i: int, shows: list[int], pools: dict[int, list[str]]) -> None:
    """Holds one seat at a time, through every node of both regions; confirms every
    other hold it is granted, retrying a 503 with the same Idempotency-Key."""
    nodes = cluster.nodes()
    for n in range(400):
        if load.stop.is_set():
            return
        show = shows[n % len(shows)]
        seat = pools[show][(i * 7 + n * 3) % POOL]
        user = f"{tag}-{i}-{n}"
        node = nodes[(i + n) % len(nodes)]
        answer = await post(http, f"{node}/booking/seats/{show}/lock", user,
                            {"seat_ids": [seat]})
        load.holds.append((answer, user, show, seat))
        if answer.status == 201 and n % 2 == 0:
            booking = answer.body["booking_id"]
            Session.owners[booking] = user
            payment = await paid(http, node, booking, "p")
            answers = load.confirms.setdefault(booking, [])
            deadline = time.monotonic() + LOAD_DEADLINE_S
            while time.monotonic() < deadline:
                answers.append(await post(
                    http, f"{node}/booking/booking/{booking}/confirm", user,
                    {"payment_id": payment}, {"Idempotency-Key": f"k-{booking}"}))
                if answers[-1].status not in (0, 503):
                    break
                await asyncio.sleep(float(answers[-1].retry_after or 1))
        await asyncio.sleep(0.05)


async def reader(cluster: Cluster, http: aiohttp.ClientSession, load: Load,
                 shows: list[int]) -> None:
    """Keeps the shows in every node's cache, so the caches have something to get wrong."""
    while not load.stop.is_set():
        for node in cluster.nodes():
            for show in shows:
                async with http.get(f"{node}/shows/{show}/seats") as resp:
                    assert resp.status in (200, 503), await resp.text()
        await asyncio.sleep(0.2)


async def kill_master_under_load(cluster: Cluster, http: aiohttp.ClientSession, catalog: Any,
                                 tag: str, cycle: int) -> tuple[Load, str, float]:
    """Returns the load, the killed server, and when it was killed. Each cycle's customers
    compete for seats of their own, from the back of the house."""
    shows = shows_in(cluster, catalog, REGION)[:2]
    pools = {}
    for show in shows:
        seats = seats_of(catalog, show)
        assert len(seats) > (cycle + 2) * POOL
        pools[show] = seats[len(seats) - (cycle + 1) * POOL:len(seats) - cycle * POOL]
    load = Load()
    tasks = [asyncio.create_task(customer(cluster, http, load, tag, i, shows, pools))
             for i in range(CUSTOMERS)]
    tasks.append(asyncio.create_task(reader(cluster, http, load, shows)))
    started = time.monotonic()
    try:
        while len(load.granted()) < KILL_AFTER:
            assert time.monotonic() - started < LOAD_DEADLINE_S, "no load before the kill"
            await asyncio.sleep(0.05)
        victim = await master_process(cluster)
        killed_at = time.monotonic()
        faults.signal_tree(cluster.launcher.child(victim).pid, signal.SIGKILL)
        while not load.granted(after=killed_at) and \
                time.monotonic() - killed_at < LOAD_DEADLINE_S:
            await asyncio.sleep(0.05)
        await asyncio.sleep(AFTER_RESUME_S)
    finally:
        load.stop.set()
        await asyncio.gather(*tasks)
    return load, victim, killed_at


async def check_outcomes(cluster: Cluster, load: Load) -> None:
    """Every write answered, none granted twice, no confirmation lost or lied about."""
    holds = [h[0] for h in load.holds]
    confirms = [a for answers in load.confirms.values() for a in answers]
    assert {a.status for a in holds} <= {201, 409, 503}, \
        [a.body for a in holds if a.status not in (201, 409, 503)][:3]
    assert {a.status for a in confirms} <= {200, 503}, \
        [a.body for a in confirms if a.status not in (200, 503)][:3]
    for a in holds + confirms:  # a refusal says so and when to come back
        if a.status == 503:
            assert a.retry_after is not None and a.body["error"] in (
                "region_unavailable", "overloaded", "transaction_aborted",
                "payment_gateway_unavailable"), a.body
    # No seat granted to two users: nobody cancels and holds last 10 minutes here.
    granted: dict[tuple[int, str], str] = {}
    for _, user, show, seat in load.granted():
        assert (show, seat) not in granted, f"{show}/{seat}: {granted[show, seat]} and {user}"
        granted[show, seat] = user
    rows = await cluster.fetch(
        REGION, "SELECT bs.show_id, bs.seat_id, count(*) AS n FROM booking_seat bs "
        "JOIN booking b ON b.id = bs.booking_id WHERE b.status IN ('INITIATED', 'CONFIRMED') "
        "GROUP BY bs.show_id, bs.seat_id HAVING count(*) > 1")
    assert not rows, rows[:3]
    ids = [a.body["booking_id"] for a, *_ in load.granted()]
    final = {r["id"]: r["status"] for r in await cluster.fetch(
        REGION, "SELECT id, status FROM booking WHERE id = ANY($1::text[])", ids)}
    assert all(final.get(b) in ("INITIATED", "CONFIRMED") for b in ids), final
    lost = [b for b, answers in load.confirms.items()
            if any(a.status == 200 for a in answers) and final.get(b) != "CONFIRMED"]
    unconfirmed = [b for b, answers in load.confirms.items()
                   if not any(a.status == 200 for a in answers)]
    assert lost == [] and unconfirmed == [], (lost, unconfirmed)


async def audit_clean(cluster: Cluster) -> None:
    """The audit (node caches included), given a few seconds to settle."""
    deadline = time.monotonic() + 20
    while True:
        report = await run_audit(cluster.topology)
        if report.exit_code == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert report.exit_code == 0, (report.unreachable, report.violations[:5])


def bookcluster(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bookcluster", "--topology",
                           str(cluster.topology.path), *args],
                          capture_output=True, text=True, timeout=90, check=False)


async def one_failover(cluster: Cluster, http: aiohttp.ClientSession, catalog: Any,
                       tag: str, cycle: int) -> tuple[str, str]:
    """Kill the master under load, check everything, print the figures. Returns (killed
    server, new master)."""
    generation = await worker_figure(cluster, http, "bookcluster_mirror_generation")
    repaired = await worker_figure(cluster, http, "bookcluster_mirror_repaired_seats")
    load, victim, killed_at = await kill_master_under_load(cluster, http, catalog, tag, cycle)
    after = load.granted(after=killed_at)
    assert after, "holds were never granted again"
    resumed_s = min(a.done for a, *_ in after) - killed_at
    refused = sum(1 for a, *_ in load.holds if a.sent > killed_at and a.status == 503)
    await check_outcomes(cluster, load)
    took = await converged(cluster, http, REGION, shows_in(cluster, catalog, REGION)[:2])
    await audit_clean(cluster)
    new = await master_process(cluster)
    assert new != victim
    repaired = await worker_figure(cluster, http, "bookcluster_mirror_repaired_seats") \
        - repaired
    generations = await worker_figure(cluster, http, "bookcluster_mirror_generation") \
        - generation
    print(f"\nSIGKILL {victim}: {new} promoted; first hold granted {resumed_s:.2f} s after "
          f"the kill ({refused} holds answered 503 in between, {len(load.holds)} holds, "
          f"{len(load.confirms)} confirmed); new generation (+{generations:g}); the "
          f"reconciler repaired {repaired:g} seats the new master lacked or had wrong; "
          f"every node equal to PostgreSQL {took:.2f} s after the load stopped")
    assert generations >= 1  # the promotion is a new generation for the nodes' caches
    return victim, new


@pytest.mark.timeout(300)
async def test_master_killed_under_hold_confirm_load(ha: Cluster, catalog: Any) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        victim, new = await one_failover(ha, http, catalog, "kill", 0)
    assert (victim, new) == (f"{REGION}.redis.master", f"{REGION}.redis.replica.{REGION}")
    # The replica in the other region follows the new master; `status` says who leads.
    await wait_following(ha, f"south.redis.replica.{REGION}", new)
    status = await asyncio.to_thread(bookcluster, ha, "status")
    assert re.search(rf"^\s+{REGION}\s+{re.escape(str(endpoint_of(ha, new)))} "
                     rf"\({re.escape(new)}\)$", status.stdout, re.M), status.stdout


@pytest.mark.timeout(300)
async def test_planned_switchover_keeps_live_sockets_fed(ha: Cluster, catalog: Any) -> None:
    """The old master comes back (empty: no AOF here) and Sentinel makes it a replica;
    `bookcluster failover --store redis` moves the master back to it. Live sockets in
    both regions, opened before, still get the next change."""
    before = await master_process(ha)
    dead = next(n for n in (f"{REGION}.redis.master", f"{REGION}.redis.replica.{REGION}")
                if n != before)
    if ha.launcher.child(dead).popen.poll() is not None:
        await ha.launcher.restart(dead)
    await wait_following(ha, dead, before)
    show = shows_in(ha, catalog, REGION)[0]
    seat = seats_of(catalog, show)[0]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        sockets = [await http.ws_connect(f"{ha.node(r)}/shows/{show}/live")
                   for r in ("north", "south")]
        try:
            for ws in sockets:
                assert (await ws.receive_json(timeout=10))["type"] == "snapshot"
            refused = await asyncio.to_thread(bookcluster, ha, "failover", "--region", REGION,
                                              "--store", "redis", "--to", "x")
            assert refused.returncode == 2 and "--to is for postgres" in refused.stderr
            result = await asyncio.to_thread(bookcluster, ha, "failover", "--region", REGION,
                                             "--store", "redis")
            assert result.returncode == 0, result.stderr
            assert f"({before}) -> " in result.stdout and f"({dead})" in result.stdout, \
                result.stdout
            assert await master_process(ha) == dead
            await wait_following(ha, before, dead)
            await wait_following(ha, f"south.redis.replica.{REGION}", dead)
            deadline = time.monotonic() + SETTLE_S
            while True:  # writes answer 503 for the moment the switchover takes
                answer = await post(http, f"{ha.node('south')}/booking/seats/{show}/lock",
                                    "switched", {"seat_ids": [seat]})
                if answer.status != 503 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(float(answer.retry_after or 1))
            assert answer.status == 201, answer.body
            for ws in sockets:  # a delta, or a snapshot after the re-subscription
                await seen_held(ws, seat)
        finally:
            for ws in sockets:
                await ws.close()
        await converged(ha, http, REGION, [show])
    await audit_clean(ha)


async def seen_held(ws: aiohttp.ClientWebSocketResponse, seat: str) -> None:
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        message = await ws.receive_json(timeout=deadline - time.monotonic())
        if message["type"] == "delta" and seat in message["seats"] \
                and message["status"] == "LOCKED":
            return
        if message["type"] == "snapshot" and any(
                s["seat_id"] == seat and s["status"] == "LOCKED" for s in message["seats"]):
            return
    raise AssertionError(f"{seat} never shown held on this socket")


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_master_killed_again_and_again(ha: Cluster, catalog: Any) -> None:
    """The long variant: KILL_CYCLES times, kill whichever server is the master under
    load, bring it back (Sentinel makes it a replica of the new one), and go again."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for cycle in range(KILL_CYCLES):
            for name in (f"{REGION}.redis.master", f"{REGION}.redis.replica.{REGION}"):
                if ha.launcher.child(name).popen.poll() is not None:
                    await ha.launcher.restart(name)
                    await wait_following(ha, name, await master_process(ha))
            await one_failover(ha, http, catalog, f"again{cycle}", cycle + 1)
