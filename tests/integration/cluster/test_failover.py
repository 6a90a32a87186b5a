"""PostgreSQL failover under Patroni, with real processes: the primary of a region is
SIGKILLed (whole process tree) under a confirm load, or SIGSTOPped past the leader TTL.

What must hold: the standby is promoted with no human; confirms answer 200 again
once the killed member, started again as soon as the other leads (as a service
manager would), is the synchronous standby (a 200 means replicated); every confirm
answered 200 is CONFIRMED afterwards (no lost acknowledgement); no definite 4xx for
a booking that ended CONFIRMED (no lying failure); the audit is clean (no double
sale); the old primary never takes a write once replaced and rejoins as a standby
(pg_rewind).

The figures (failover time: kill -> first successful confirm sent after it) are
printed; run with `-s` to see them.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio

from bookcluster.local import faults, patroni
from bookcluster.local.launcher import LocalCluster
from bookcluster.node.auth import mint
from bookcluster.ops.audit import run_audit
from bookcluster.ops.demo_catalog import CatalogSpec, build_catalog
from bookcluster.stores import patroni_api
from bookcluster.stores.connections import PG_TOOL_SESSION, connect_primary, pg_dsn, pg_login
from bookcluster.topology.load import load_topology
from bookcluster.topology.model import Region, Topology
from tests.integration.support import topology_yaml

CATALOG = CatalogSpec(theatres_per_city=1, cities_per_region=2, days=1, shows_per_day=2)
LIMITS = """\
  user_writes: {per_second: 100000, burst: 100000}
  ip_writes: {per_second: 100000, burst: 100000}
  ip_reads: {per_second: 100000, burst: 100000}
"""
BOOKINGS = 240  # held and paid before the fault; confirmed during it
CLIENTS = 6
PACE_S = 0.4  # a client's pause between two bookings: the load spans the failover
LOAD_DEADLINE_S = 120.0  # every loop here is bounded in time and count
KILL_AFTER = 40  # confirms answered before the primary is killed
REJOIN_TIMEOUT_S = 90.0
FREEZE_S = patroni.TTL_S + 10
KILL_CYCLES = 4  # the slow variant


@dataclass
class HA:
    launcher: LocalCluster
    topology: Topology
    region: Region
    nodes: list[str]
    catalog: Any

    async def leader_process(self) -> str:
        """The launcher's name of the member that leads now."""
        view = await patroni_api.any_cluster_view(self.region)
        leader = patroni_api.leader(view)
        assert leader is not None, view
        index = [patroni.member_name(self.region, i)
                 for i in range(len(self.region.pg_members))].index(leader["name"])
        return patroni.process_name(self.region, index)

    async def wait_sync_standby(self, timeout_s: float = REJOIN_TIMEOUT_S) -> str:
        """Wait until a member is the synchronous standby in the DCS: only such a member
        may be promoted (it has every commit that answered), so before that a dead
        primary is not replaced at all, rightly."""
        deadline = time.monotonic() + timeout_s
        view: dict[str, Any] = {}
        while time.monotonic() < deadline:
            view = await patroni_api.any_cluster_view(self.region)
            sync = [m["name"] for m in view.get("members", []) if m.get("role") == "sync_standby"]
            if sync:
                return str(sync[0])
            await asyncio.sleep(0.5)
        raise AssertionError(f"no synchronous standby after {timeout_s}s: {view}")

    async def wait_member(self, process: str, roles: tuple[str, ...],
                          timeout_s: float = REJOIN_TIMEOUT_S) -> dict[str, Any]:
        """Poll a member's Patroni until it runs in one of `roles`, streaming if a replica."""
        api = self.launcher.child(process).spec.api
        assert api is not None
        deadline = time.monotonic() + timeout_s
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                state = await patroni_api.member_state(api)
            except (OSError, aiohttp.ClientError, TimeoutError, patroni_api.PatroniError):
                state = {}
            if state.get("role") in roles and state.get("state") == "running" and (
                    state.get("role") == "primary"
                    or state.get("replication_state") == "streaming"):
                return state
            await asyncio.sleep(0.5)
        raise AssertionError(f"{process} not {roles} after {timeout_s}s: {state}")


async def rejoin_when_replaced(ha: HA, victim: str) -> float:
    """Start a killed member again once another one leads, as an operator or a service
    manager would: confirms answer 200 again only once it is the synchronous standby
    (a 200 means replicated: `bookcluster/stores/replication.py`). Returns when it started."""
    deadline = time.monotonic() + REJOIN_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            view = await patroni_api.any_cluster_view(ha.region)
        except patroni_api.PatroniError:
            view = {}
        leader = patroni_api.leader(view)
        names = [patroni.member_name(ha.region, i) for i in range(len(ha.region.pg_members))]
        if leader is not None and patroni.process_name(
                ha.region, names.index(leader["name"])) != victim:
            started = time.monotonic()
            await ha.launcher.restart(victim)
            return started
        await asyncio.sleep(0.5)
    raise AssertionError(f"{victim} still leads (or nobody) after {REJOIN_TIMEOUT_S}s")


@pytest_asyncio.fixture(scope="module")
async def ha() -> AsyncIterator[HA]:
    with tempfile.TemporaryDirectory(prefix="bookcluster-failover-") as tmp:
        Path(tmp).chmod(0o755)
        path = Path(tmp) / "topology.yaml"
        path.write_text(topology_yaml(Path(tmp) / "run", regions=("north",), nodes=2,
                                      standby=("north",), workers=True, limits=LIMITS))
        topology = load_topology(path)
        launcher = LocalCluster(topology, catalog=CATALOG, progress=lambda _: None)
        await launcher.start()
        try:
            region = topology.region("north")
            yield HA(launcher, topology, region,
                     [f"http://{ep.host}:{ep.port}" for ep in region.nodes],
                     build_catalog(CATALOG, date.today()))
        finally:
            launcher.stop()


@dataclass
class Booking:
    booking_id: str
    user: str
    payment_id: str
    answers: list[tuple[float, float, int, Any]] = field(default_factory=list)


def bearer(ha: HA, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(ha.topology, user, 3600)}"}


async def prepare(http: aiohttp.ClientSession, ha: HA, count: int, tag: str) -> list[Booking]:
    """`count` bookings held (two seats each, every one by its own user) and paid: a
    captured payment, no webhook, so only the confirm sells."""
    pairs = []  # two free seats of one show, in order
    for show in ha.catalog.shows:
        free = [s.seat_id for s in ha.catalog.seats if s.screen_id == show.screen_id
                and not s.blocked]
        pairs += [(show.id, free[i:i + 2]) for i in range(0, len(free) - 1, 2)]
    assert ha.topology.payments is not None
    gateway = f"http://{ha.topology.payments.gateway}"
    merchant = {"Authorization": f"Bearer {ha.topology.secrets.get('gateway_api_key')}"}
    sold = {(r["show_id"], r["seat_id"]) for r in await fetch(
        ha, "SELECT show_id, seat_id FROM show_seat WHERE status <> 'AVAILABLE'")}
    pairs = [(show, two) for show, two in pairs if not {(show, s) for s in two} & sold]
    assert len(pairs) >= count

    async def one(i: int) -> Booking:
        show, two = pairs[i]
        user = f"{tag}-{i}"
        async with http.post(f"{ha.nodes[i % 2]}/booking/seats/{show}/lock",
                             json={"seat_ids": two}, headers=bearer(ha, user)) as resp:
            held = await resp.json()
            assert resp.status == 201, held
        async with http.post(f"{gateway}/intents", headers=merchant, json={
                "booking_id": held["booking_id"], "region": held["region"],
                "amount_paise": held["amount_paise"], "capture_delay_ms": 0,
                "outcome": "capture", "webhook": False}) as resp:
            assert resp.status == 201, await resp.text()
            payment = str((await resp.json())["id"])
        for _ in range(100):
            async with http.get(f"{gateway}/intents/{payment}", headers=merchant) as resp:
                if (await resp.json())["status"] == "CAPTURED":
                    return Booking(held["booking_id"], user, payment)
            await asyncio.sleep(0.05)
        raise AssertionError(f"payment {payment} not captured")

    out: list[Booking] = []
    for start in range(0, count, 16):
        out += await asyncio.gather(*(one(i) for i in range(start, min(count, start + 16))))
    return out


async def fetch(ha: HA, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await connect_primary(ha.region.pg_members, ha.topology.secrets,
                                 server_settings=PG_TOOL_SESSION)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def confirm_all(http: aiohttp.ClientSession, ha: HA, bookings: list[Booking],
                      fault: asyncio.Event) -> None:
    """CLIENTS clients confirm the bookings, each retrying a 503 with the same
    Idempotency-Key after its Retry-After, as a client should. Sets `fault` once
    KILL_AFTER confirms were answered."""
    todo = collections.deque(bookings)
    answered = 0
    deadline = time.monotonic() + LOAD_DEADLINE_S

    async def client(n: int) -> None:
        nonlocal answered
        while todo and time.monotonic() < deadline:
            booking = todo.popleft()
            url = f"{ha.nodes[n % 2]}/booking/booking/{booking.booking_id}/confirm"
            headers = {**bearer(ha, booking.user), "Idempotency-Key": f"k-{booking.booking_id}"}
            while time.monotonic() < deadline:
                sent = time.monotonic()
                try:
                    async with http.post(url, json={"payment_id": booking.payment_id},
                                         headers=headers) as resp:
                        body = await resp.json(content_type=None)
                        status, retry_after = resp.status, resp.headers.get("Retry-After")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status, body, retry_after = 0, repr(exc), None  # unknown outcome
                booking.answers.append((sent, time.monotonic(), status, body))
                if status not in (0, 503):
                    break
                if status == 503:
                    assert retry_after is not None and body["retry_after_s"] >= 1, body
                await asyncio.sleep(float(retry_after or 1))
            answered += 1
            if answered >= KILL_AFTER:
                fault.set()
            await asyncio.sleep(PACE_S)

    await asyncio.gather(*(client(n) for n in range(CLIENTS)))


async def outcomes(ha: HA, bookings: list[Booking]) -> dict[str, list[str]]:
    """Lost acknowledgements and lying failures, from the answers and the database."""
    rows = await fetch(ha, "SELECT id, status FROM booking WHERE id = ANY($1::text[])",
                       [b.booking_id for b in bookings])
    final = {r["id"]: r["status"] for r in rows}
    lost, lying, unanswered = [], [], []
    for b in bookings:
        statuses = [a[2] for a in b.answers]
        if any(a[2] == 200 and isinstance(a[3], dict) and a[3].get("status") == "CONFIRMED"
               for a in b.answers) \
                and final.get(b.booking_id) != "CONFIRMED":
            lost.append(b.booking_id)
        if any(400 <= s < 500 for s in statuses) and final.get(b.booking_id) == "CONFIRMED":
            lying.append(b.booking_id)
        if 200 not in statuses:
            unanswered.append(f"{b.booking_id}: {statuses[-3:]} {b.answers[-1][3]!r:.200}")
    return {"lost_ack": lost, "lying_fail": lying, "not_confirmed": unanswered}


async def audit_clean(ha: HA) -> None:
    """The audit, given a few seconds for Redis to catch up with sales PostgreSQL made."""
    deadline = time.monotonic() + 20
    while True:
        report = await run_audit(ha.topology)
        if report.exit_code == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert report.exit_code == 0, (report.unreachable, report.violations[:5])


@pytest.mark.timeout(300)
async def test_primary_killed_under_confirm_load(ha: HA) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        bookings = await prepare(http, ha, BOOKINGS, "kill")
        await ha.wait_sync_standby()
        victim = await ha.leader_process()
        fault = asyncio.Event()
        load = asyncio.create_task(confirm_all(http, ha, bookings, fault))
        await asyncio.wait_for(fault.wait(), LOAD_DEADLINE_S)
        killed_at = time.monotonic()
        faults.signal_tree(ha.launcher.child(victim).pid, signal.SIGKILL)
        started = await rejoin_when_replaced(ha, victim)
        await load

    found = await outcomes(ha, bookings)
    answers = [a for b in bookings for a in b.answers]
    after = sorted(done for sent, done, status, _ in answers if sent > killed_at and status == 200)
    refused = sum(1 for sent, _, status, _ in answers if sent > killed_at and status == 503)
    failover_s = after[0] - killed_at if after else None
    print(f"\nSIGKILL {victim}: first confirm 200 sent after the kill answered "
          f"{failover_s if failover_s is None else round(failover_s, 1)} s after it; "
          f"{refused} answers 503 in between; lost_ack={len(found['lost_ack'])} "
          f"lying_fail={len(found['lying_fail'])}, {len(bookings)} bookings")
    assert failover_s is not None, "writes never resumed"
    assert found == {"lost_ack": [], "lying_fail": [], "not_confirmed": []}, found
    await audit_clean(ha)

    # The old primary came back (its process restarted, data kept) as a standby.
    leader = await ha.leader_process()
    assert leader != victim
    state = await ha.wait_member(victim, ("replica",))
    leader_state = await ha.wait_member(leader, ("primary",))
    print(f"{victim} started again {started - killed_at:.1f} s after the kill (once the "
          f"other member led), rejoined as a streaming replica (timeline {state['timeline']})")
    assert state["timeline"] == leader_state["timeline"] > 1


@pytest.mark.timeout(300)
async def test_stopped_primary_is_demoted_and_never_takes_a_write(ha: HA) -> None:
    """SIGSTOP the leader's whole tree (Patroni and PostgreSQL: a frozen machine) for
    longer than the leader TTL. The other member takes over; when the old one wakes,
    a session it still has cannot commit, nobody can write to it, and it rejoins.

    Longer than the TTL by a margin: when the key expires the standby first asks the
    old primary whether it still runs (2 s timeout), and one that wakes in time to
    answer keeps its place (correct, but not the case under test)."""
    await ha.wait_sync_standby()
    victim = await ha.leader_process()
    member = ha.launcher.child(victim)
    endpoint = ha.region.pg_members[int(victim.rsplit(".", 1)[1]) - 1]
    await fetch(ha, "CREATE TABLE IF NOT EXISTS fence_probe (tag text PRIMARY KEY)")
    # A session on the old primary, opened before it froze, as a node's pool has them.
    stale = await asyncpg.connect(pg_dsn(endpoint), **pg_login(ha.topology.secrets),
                                  server_settings=PG_TOOL_SESSION)
    acked: list[str] = []
    stop = asyncio.Event()

    async def writer() -> None:  # through the multi-host connect, as nodes do
        n = 0
        while not stop.is_set():
            n += 1
            try:
                conn = await connect_primary(ha.region.pg_members, ha.topology.secrets,
                                             timeout=1.0, command_timeout=2.0)
                try:
                    await conn.execute("INSERT INTO fence_probe VALUES ($1)", f"ok-{n}")
                    acked.append(f"ok-{n}")
                finally:
                    conn.terminate()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass
            await asyncio.sleep(0.2)

    writing = asyncio.create_task(writer())
    accepted: list[str] = []
    try:
        await asyncio.sleep(1)
        with faults.paused(member.pid):
            await asyncio.sleep(FREEZE_S)
        before_resume = len(acked)
        # Right after it wakes: its old session tries to commit, and new sessions try too.
        tries = [_try_write(stale, "stale-session")]
        for i in range(20):
            tries.append(_try_fresh_write(ha, endpoint, f"stale-{i}"))
            await asyncio.sleep(0.25)
        results = await asyncio.gather(*tries)
        accepted = [tag for tag, ok in results if ok]
        await ha.wait_member(victim, ("replica",))
    finally:
        stop.set()
        await writing
        stale.terminate()
    print(f"\nSIGSTOP {victim} for {FREEZE_S} s: {before_resume} probe writes acked "
          f"(one every 0.2 s where the primary answered); old primary accepted "
          f"{len(accepted)} writes after waking")
    assert accepted == []
    assert before_resume > 5  # writes went on while it was frozen
    tags = {r["tag"] for r in await fetch(ha, "SELECT tag FROM fence_probe")}
    assert set(acked) <= tags and not any(t.startswith("stale") for t in tags)
    # The rejoined member holds the same rows (hot standby: it can be read).
    replica = await asyncpg.connect(pg_dsn(endpoint), **pg_login(ha.topology.secrets))
    try:
        for _ in range(20):
            mine = {r["tag"] for r in await replica.fetch("SELECT tag FROM fence_probe")}
            if mine == tags:
                break
            await asyncio.sleep(0.25)
        assert mine == tags
    finally:
        await replica.close()
    await audit_clean(ha)


async def _try_write(conn: asyncpg.Connection, tag: str) -> tuple[str, bool]:
    """True only if the server acknowledged the commit."""
    try:
        await asyncio.wait_for(conn.execute("INSERT INTO fence_probe VALUES ($1)", tag), 5)
        return tag, True
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return tag, False


async def _try_fresh_write(ha: HA, endpoint: Any, tag: str) -> tuple[str, bool]:
    try:
        conn = await asyncpg.connect(pg_dsn(endpoint), **pg_login(ha.topology.secrets),
                                     timeout=2.0)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return tag, False
    try:
        return await _try_write(conn, tag)
    finally:
        conn.terminate()


@pytest.mark.timeout(180)
async def test_planned_switchover_from_the_cli(ha: HA) -> None:
    """`bookcluster failover --region north --store postgres`: the standby leads, the old
    primary follows it, and bookings go on."""
    await ha.wait_sync_standby()
    before = await ha.leader_process()

    def bookcluster(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bookcluster", "--topology",
                               str(ha.topology.path), *args],
                              capture_output=True, text=True, timeout=90, check=False)

    result = await asyncio.to_thread(bookcluster, "failover", "--region", "north",
                                     "--store", "postgres")
    assert result.returncode == 0, result.stderr
    after = await ha.leader_process()
    assert after != before and f"-> {patroni.member_name(ha.region, int(after[-1]) - 1)}" \
        in result.stdout, result.stdout
    await ha.wait_member(before, ("replica",))
    await ha.wait_sync_standby()  # a confirm answers 200 only once it is replicated
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        [booking] = await prepare(http, ha, 1, "switched")
        async with http.post(f"{ha.nodes[0]}/booking/booking/{booking.booking_id}/confirm",
                             json={"payment_id": booking.payment_id},
                             headers={**bearer(ha, booking.user), "Idempotency-Key": "k"}) as resp:
            assert resp.status == 200, await resp.text()
    # `status` labels each member by what it is now: the new leader's row says so.
    status = await asyncio.to_thread(bookcluster, "status", "--wide")  # nothing cut short
    assert any(line.split()[:3] == [after, "pg", "leader"]
               for line in status.stdout.splitlines()), status.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_primary_killed_again_and_again(ha: HA) -> None:
    """The long variant: KILL_CYCLES times, kill whichever member leads under a confirm
    load, bring it back, wait until it is the synchronous standby, and go again."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        every: list[Booking] = []
        for cycle in range(KILL_CYCLES):
            bookings = await prepare(http, ha, BOOKINGS // 2, f"again{cycle}")
            every += bookings
            await ha.wait_sync_standby()
            victim = await ha.leader_process()
            fault = asyncio.Event()
            load = asyncio.create_task(confirm_all(http, ha, bookings, fault))
            await asyncio.wait_for(fault.wait(), LOAD_DEADLINE_S)
            killed_at = time.monotonic()
            faults.signal_tree(ha.launcher.child(victim).pid, signal.SIGKILL)
            await rejoin_when_replaced(ha, victim)
            await load
            resumed = min(done for b in bookings for sent, done, status, _ in b.answers
                          if sent > killed_at and status == 200)
            print(f"\ncycle {cycle + 1}: SIGKILL {victim}, writes again after "
                  f"{resumed - killed_at:.1f} s")
            await ha.wait_member(victim, ("replica",))
    found = await outcomes(ha, every)
    assert found == {"lost_ack": [], "lying_fail": [], "not_confirmed": []}, found
    await audit_clean(ha)


async def test_etcd_refuses_without_its_password(ha: HA) -> None:
    """Whoever writes the leader key picks the primary: etcd wants a login."""
    base = f"http://{ha.region.pg_etcd[0]}/v3"
    leader_key = base64.b64encode(f"{patroni.NAMESPACE}north/leader".encode()).decode()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for path, body in (("kv/range", {"key": leader_key}),
                           ("kv/put", {"key": leader_key, "value": "bWU="})):
            async with http.post(f"{base}/{path}", json=body) as resp:
                answer = await resp.json(content_type=None)
                assert "user name is empty" in answer.get("error", ""), answer
        async with http.post(f"{base}/auth/authenticate",
                             json={"name": "root", "password": "wrong-password-123"}) as resp:
            assert resp.status != 200 and "authentication failed" in await resp.text()
    assert (await ha.leader_process()).startswith("north.postgres.")  # nothing changed
