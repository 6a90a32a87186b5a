"""The chaos soak's two halves: shoppers that book and keep every answer they got, and
the faults injected while they shop (see `test_chaos.py`).

Shoppers hold one seat each through any node of any region (a write for another
region is forwarded), pay at the gateway (captured at once, with its webhook, so the
payment saga and the confirm race to sell), and confirm with an Idempotency-Key,
retrying every unknown answer (503, no answer) with the same key until a definite
one. Each fault is injected, held for a few seconds and healed (the process started
again, resumed, the link restored) before the next; a PostgreSQL primary that was
killed recovers in the background (its region takes no other PostgreSQL fault until
its standby is synchronous again).
"""

from __future__ import annotations

import asyncio
import collections
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bookcluster.local import faults, patroni
from bookcluster.local.launcher import LocalCluster
from bookcluster.node.auth import mint
from bookcluster.stores import patroni_api, sentinel_api
from bookcluster.topology.model import Topology

REQUEST_TIMEOUT_S = 10.0  # a write answers within its 1.9 s deadline; this is a hang
HOLD_GIVE_UP_S = 60.0
CONFIRM_GIVE_UP_S = 150.0  # a PostgreSQL failover takes ~20 s; two in a row, and more
FAULT_S = 3.0  # how long a process stays paused or a link cut
SETTLE_S = 90.0  # bound on waiting for a server to take its role again
CONTESTED = 0.1  # share of seats another shopper tries again later (a 409, or a sale)


Answer = tuple[int, Any, str | None]  # status (0: no answer), body, Retry-After


@dataclass
class Flow:
    """One booking as its shopper saw it."""

    region: str
    show: int
    seat: str
    user: str
    booking: str | None = None
    payment: str | None = None
    confirms: list[tuple[int, Any]] = field(default_factory=list)


class Shoppers:
    def __init__(self, topology: Topology, shows: dict[str, dict[int, list[str]]],
                 http: aiohttp.ClientSession, rng: random.Random) -> None:
        self.topology = topology
        self.pools = shows  # region -> show -> seats not tried yet (shuffled)
        self.http = http
        self.rng = rng
        self.nodes = [f"http://{ep}" for r in topology.regions.values() for ep in r.nodes]
        assert topology.payments is not None
        self.gateway = f"http://{topology.payments.gateway}"
        self.merchant = {"Authorization": f"Bearer {topology.secrets.get('gateway_api_key')}"}
        self.flows: list[Flow] = []
        self.confirmed = 0  # confirms answered 200
        self.statuses: collections.Counter[str] = collections.Counter()
        self.server_errors: list[Any] = []  # bodies of 5xx answers but 503 (a bug)
        self.stop = asyncio.Event()

    async def request(self, method: str, url: str, **kwargs: Any) -> Answer:
        try:
            async with self.http.request(
                    method, url, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
                    **kwargs) as resp:
                body = await resp.json(content_type=None)
                return resp.status, body, resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return 0, repr(exc), None

    def _auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint(self.topology, user, 3600)}"}

    def _pick(self) -> tuple[str, int, str] | None:
        regions = [r for r, shows in self.pools.items() if shows]
        if not regions:
            return None
        region = self.rng.choice(regions)
        show = self.rng.choice(list(self.pools[region]))
        seats = self.pools[region][show]
        seat = seats.pop()
        if not seats:
            del self.pools[region][show]
        if self.rng.random() < CONTESTED:
            seats.insert(0, seat)
            self.pools[region].setdefault(show, seats)
        return region, show, seat

    async def shop(self, name: str, target: int) -> None:
        n = 0
        while not self.stop.is_set() and self.confirmed < target:
            picked = self._pick()
            if picked is None:
                return  # sold out
            n += 1
            flow = Flow(*picked, user=f"{name}-{n}")
            self.flows.append(flow)
            if await self._hold(flow):
                await self._confirm(flow)

    async def _retry(self, flow: Flow, path: str, body: dict[str, Any], key: str,
                     give_up_s: float) -> Answer:
        """POST to random nodes with one Idempotency-Key until an answer that is not 503
        (or none); the last answer."""
        deadline = time.monotonic() + give_up_s
        while True:
            node = self.rng.choice(self.nodes)
            answer = await self.request("POST", f"{node}{path}", json=body, headers={
                **self._auth(flow.user), "Idempotency-Key": key})
            status, answer_body, retry_after = answer
            code = (answer_body.get("error") if isinstance(answer_body, dict)
                    and 400 <= status < 500 else None)
            self.statuses[f"{path.split('/')[2]} {status}" + (f" {code}" if code else "")] += 1
            if status >= 500 and status != 503:
                self.server_errors.append(answer_body)
            if status not in (0, 503, 429) or time.monotonic() > deadline:
                return answer
            await asyncio.sleep(float(retry_after or 0.5))

    async def _hold(self, flow: Flow) -> bool:
        """Held (and paid: captured at the gateway), or the seat is someone else's."""
        status, body, _ = await self._retry(flow, f"/booking/seats/{flow.show}/lock",
                                            {"seat_ids": [flow.seat]}, f"h-{flow.user}",
                                            HOLD_GIVE_UP_S)
        if status != 201:
            return False
        flow.booking = body["booking_id"]
        flow.payment = await self._capture(flow, body["amount_paise"])
        return True

    async def _capture(self, flow: Flow, amount: int) -> str | None:
        """A payment the gateway captured at once, with its webhook (the saga may sell)."""
        status, body, _ = await self.request("POST", f"{self.gateway}/intents",
                                             headers=self.merchant, json={
                                                 "booking_id": flow.booking,
                                                 "region": flow.region,
                                                 "amount_paise": amount,
                                                 "capture_delay_ms": 0, "outcome": "capture",
                                                 "webhook": True})
        assert status == 201, body  # the gateway is never faulted
        payment = str(body["id"])
        for _ in range(200):
            status, body, _ = await self.request("GET", f"{self.gateway}/intents/{payment}",
                                                 headers=self.merchant)
            if status == 200 and body["status"] == "CAPTURED":
                return payment
            await asyncio.sleep(0.05)
        raise AssertionError(f"payment {payment} not captured")

    async def _confirm(self, flow: Flow) -> None:
        assert flow.booking is not None
        deadline = time.monotonic() + CONFIRM_GIVE_UP_S
        while time.monotonic() < deadline:
            status, body, retry_after = await self._retry(
                flow, f"/booking/booking/{flow.booking}/confirm", {"payment_id": flow.payment},
                f"c-{flow.booking}", CONFIRM_GIVE_UP_S)
            flow.confirms.append((status, body))
            if status == 200:
                self.confirmed += 1
                return
            if status not in (0, 503, 429):
                return  # a definite refusal
            await asyncio.sleep(float(retry_after or 0.5))


class Chaos:
    """Injects one fault at a time into a running local cluster, and heals it."""

    def __init__(self, launcher: LocalCluster, http: aiohttp.ClientSession,
                 rng: random.Random, wan_control: str, base_delay_ms: int) -> None:
        self.launcher = launcher
        self.topology = launcher.topology
        self.http = http
        self.rng = rng
        self.wan = wan_control
        self.base_delay_ms = base_delay_ms
        self.injected: collections.Counter[str] = collections.Counter()
        self.log: list[str] = []
        self.restarts_failed = 0  # starts that failed and were tried again
        self._recovering: dict[str, asyncio.Task[None]] = {}  # region -> PostgreSQL recovery
        self.kinds: dict[str, Callable[[], Awaitable[str | None]]] = {
            "node_kill": self.node_kill, "node_stop": self.node_stop,
            "worker_kill": self.worker_kill, "worker_stop": self.worker_stop,
            "redis_master_kill": self.redis_master_kill,
            "redis_master_stop": self.redis_master_stop,
            "pg_primary_kill": self.pg_primary_kill, "pg_primary_stop": self.pg_primary_stop,
            "sentinel_kill": self.sentinel_kill, "sentinel_stop": self.sentinel_stop,
            "link_cut": self.link_cut, "link_delay": self.link_delay,
        }

    async def inject(self, kind: str | None = None) -> None:
        """One fault (`kind`, else one of the kinds injected least so far that can be
        injected now, at random), healed."""
        kinds = [kind] if kind else list(self.kinds)
        self.rng.shuffle(kinds)
        kinds.sort(key=lambda k: self.injected[k])
        for name in kinds:
            started = time.monotonic()
            what = await self.kinds[name]()
            if what is not None:
                self.injected[name] += 1
                self.log.append(f"{name}: {what} ({time.monotonic() - started:.1f} s)")
                return
        raise AssertionError(f"no fault of {kinds} can be injected now")

    async def settle(self) -> None:
        """Every background recovery done; every process of the cluster running."""
        await asyncio.gather(*self._recovering.values())
        for name in self.launcher.crashed():
            await self._restart(name)

    # -- processes ------------------------------------------------------------------

    def _names(self, role: str) -> list[str]:
        return [c.spec.name for c in self.launcher.supervisor.children if c.spec.role == role]

    async def _restart(self, name: str) -> None:
        """Start it again, as a service manager would, until it stays up: a node or worker
        cannot start while its region's PostgreSQL fails over (a fault in the background)."""
        deadline = time.monotonic() + 3 * SETTLE_S
        while True:
            try:
                await self.launcher.restart(name)
                return
            except (RuntimeError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                self.restarts_failed += 1
                await asyncio.sleep(2.0)

    async def _kill_and_restart(self, name: str) -> str:
        faults.signal_tree(self.launcher.child(name).pid, signal.SIGKILL)
        await asyncio.sleep(1.0)
        await self._restart(name)
        return name

    async def _pause(self, name: str, seconds: float = FAULT_S) -> str:
        with faults.paused(self.launcher.child(name).pid):
            await asyncio.sleep(seconds)
        return name

    async def node_kill(self) -> str:
        return await self._kill_and_restart(self.rng.choice(self._names("node")))

    async def node_stop(self) -> str:
        return await self._pause(self.rng.choice(self._names("node")))

    async def worker_kill(self) -> str:
        return await self._kill_and_restart(self.rng.choice(self._names("worker")))

    async def worker_stop(self) -> str:
        return await self._pause(self.rng.choice(self._names("worker")))

    async def sentinel_kill(self) -> str:
        return await self._kill_and_restart(self.rng.choice(self._names("redis-sentinel")))

    async def sentinel_stop(self) -> str:
        return await self._pause(self.rng.choice(self._names("redis-sentinel")))

    # -- Redis masters ----------------------------------------------------------------

    def _redis_pair(self, region: str) -> tuple[str, str]:
        return f"{region}.redis.master", f"{region}.redis.replica.{region}"

    async def _master(self, region: str) -> str:
        ep = await sentinel_api.master_of(self.topology, region)
        return sentinel_api.server_name(self.topology, ep)

    async def _redis_settled(self, region: str) -> None:
        """Until the sentinels name a master of `region` that answers as one and the
        region's other server follows it."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            try:
                master = await self._master(region)
                other = next(n for n in self._redis_pair(region) if n != master)
                if await _role(self.launcher, master) == ("master", None) and \
                        await _role(self.launcher, other) == ("slave", _port(self.launcher,
                                                                                master)):
                    return
            except (sentinel_api.SentinelError, StopIteration):
                pass
            assert time.monotonic() < deadline, f"{region}'s Redis did not settle"
            await asyncio.sleep(0.25)

    async def redis_master_kill(self) -> str:
        region = self.rng.choice(list(self.topology.regions))
        await self._redis_settled(region)
        victim = await self._master(region)
        faults.signal_tree(self.launcher.child(victim).pid, signal.SIGKILL)
        killed = time.monotonic()
        while await self._master(region) == victim:
            assert time.monotonic() - killed < SETTLE_S, f"{victim} never replaced"
            await asyncio.sleep(0.1)
        promoted = time.monotonic() - killed
        await self._restart(victim)
        await self._redis_settled(region)
        return f"{victim}, replaced in {promoted:.1f} s"

    async def redis_master_stop(self) -> str:
        region = self.rng.choice(list(self.topology.regions))
        await self._redis_settled(region)
        victim = await self._master(region)
        await self._pause(victim, FAULT_S + 1)  # past down-after and the failover
        await self._redis_settled(region)
        return f"{victim}, master now {await self._master(region)}"

    # -- PostgreSQL primaries -------------------------------------------------------

    def _calm_regions(self) -> list[str]:
        return [r for r, region in self.topology.regions.items()
                if region.pg_standby is not None
                and (r not in self._recovering or self._recovering[r].done())]

    async def _leader(self, region: str) -> str | None:
        topology_region = self.topology.region(region)
        try:
            view = await patroni_api.any_cluster_view(topology_region)
        except patroni_api.PatroniError:
            return None
        leader = patroni_api.leader(view)
        if leader is None or not any(m.get("role") == "sync_standby"
                                     for m in view.get("members", [])):
            return None  # no leader, or none that could take over
        names = [patroni.member_name(topology_region, i)
                 for i in range(len(topology_region.pg_members))]
        return patroni.process_name(topology_region, names.index(leader["name"]))

    async def pg_primary_kill(self) -> str | None:
        calm = self._calm_regions()
        if not calm:
            return None
        region = self.rng.choice(calm)
        victim = await self._leader(region)
        if victim is None:
            return None
        faults.signal_tree(self.launcher.child(victim).pid, signal.SIGKILL)
        self._recovering[region] = asyncio.create_task(self._pg_recover(region, victim))
        return victim

    async def _pg_recover(self, region: str, victim: str) -> None:
        deadline = time.monotonic() + 3 * SETTLE_S
        while await self._leader_any(region) in (None, victim):
            assert time.monotonic() < deadline, f"{region}: no new PostgreSQL leader"
            await asyncio.sleep(0.5)
        await self._restart(victim)  # rejoins as a standby (pg_rewind)
        while await self._leader(region) is None:
            assert time.monotonic() < deadline, f"{region}: {victim} not synchronous again"
            await asyncio.sleep(0.5)

    async def _leader_any(self, region: str) -> str | None:
        topology_region = self.topology.region(region)
        try:
            leader = patroni_api.leader(await patroni_api.any_cluster_view(topology_region))
        except patroni_api.PatroniError:
            return None
        if leader is None:
            return None
        names = [patroni.member_name(topology_region, i)
                 for i in range(len(topology_region.pg_members))]
        return patroni.process_name(topology_region, names.index(leader["name"]))

    async def pg_primary_stop(self) -> str | None:
        calm = self._calm_regions()
        if not calm:
            return None
        region = self.rng.choice(calm)
        victim = await self._leader(region)
        if victim is None:
            return None
        return await self._pause(victim)  # shorter than the leader TTL: no failover

    # -- cross-region links (the WAN proxy) -----------------------------------------

    async def _links(self) -> list[str]:
        async with self.http.get(f"{self.wan}/links") as resp:
            return [link["name"] for link in await resp.json()]

    async def _set(self, link: str, **settings: Any) -> None:
        async with self.http.post(f"{self.wan}/links/{link}", json=settings) as resp:
            assert resp.status == 200, await resp.text()

    async def link_cut(self) -> str:
        link = self.rng.choice(await self._links())
        mode = self.rng.choice(["blackhole", "reset"])
        await self._set(link, mode=mode)
        try:
            await asyncio.sleep(FAULT_S)
        finally:
            await self._set(link, mode="normal")
        return f"{link} {mode}"

    async def link_delay(self) -> str:
        link = self.rng.choice(await self._links())
        await self._set(link, delay_ms=300)
        try:
            await asyncio.sleep(FAULT_S + 2)
        finally:
            await self._set(link, delay_ms=self.base_delay_ms)
        return f"{link} +300 ms"


def _port(launcher: LocalCluster, name: str) -> int:
    return launcher.child(name).spec.port


async def _role(launcher: LocalCluster, name: str) -> tuple[str, int | None] | None:
    """("master", None) or ("slave", the port of its master, link up), else None."""
    spec = launcher.child(name).spec
    client = aioredis.Redis(host=spec.host, port=spec.port, decode_responses=True,
                            password=launcher.topology.secrets.redis_password,
                            socket_timeout=2, socket_connect_timeout=2)
    try:
        info = await client.info("replication")
    except (OSError, aioredis.RedisError):
        return None
    finally:
        await client.aclose()
    if info.get("role") == "master":
        return "master", None
    if info.get("master_link_status") != "up":
        return None
    return "slave", int(info["master_port"])
