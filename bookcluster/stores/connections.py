"""Per-region connection registry: one owner for every Redis client and asyncpg pool.

A node in region R talks to
- each region's Redis master (writes for that region's theatres),
- R's local replica of each region's master (seat-map reads that stay home),
- each region's PostgreSQL primary (bookings of that region's theatres),
- R's own PostgreSQL (the catalog, which every region holds in full).

A region's PostgreSQL is a Patroni pair: either member may be the primary, so
every connection is made to whichever member accepts writes (`connect_primary`,
the multi-host DSN's `target_session_attrs=read-write`), and a pool finds the
new primary by itself after a failover. Likewise a region's Redis master is
whichever server Sentinel says it is now (`make_master`).

Everything is created at open without connecting (asyncpg pools with
min_size=0, redis-py connects on first command), so a dead region never
blocks start-up, and closed in `close()`.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import asyncpg
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import NoBackoff
from redis.exceptions import ReadOnlyError, ResponseError

from bookcluster.topology.model import Endpoint, Region, Topology
from bookcluster.topology.secrets import Secrets

# Writes must fail fast when a home region is unreachable (CP, answer 503 in
# well under 2 s): short timeouts and no silent retries.
REDIS_CONNECT_TIMEOUT_S = 0.5
REDIS_COMMAND_TIMEOUT_S = 0.8
# Connections per Redis client (one client per server a node talks to). redis-py's
# default pool refuses the 101st concurrent command at once (MaxConnectionsError):
# 1,000 clients racing for one seat got 503s from a healthy master. Ours block
# instead, in order, while the caller's own deadline lasts (`bookcluster/stores/deadline.py`
# cuts every write's store call; the pool's wait only bounds callers without one).
# 64 is far above what a master needs to be kept busy by one node and far below
# Redis' 10,000 clients for 15 nodes x 3 regions.
REDIS_POOL_MAX = 64
REDIS_POOL_WAIT_S = 2.0
# A sentinel that does not answer this fast is skipped for the next one (a frozen one
# would otherwise hold every new connection up); the one that answered is asked first
# from then on.
SENTINEL_TIMEOUT_S = 0.5
PG_CONNECT_TIMEOUT_S = 0.8
PG_COMMAND_TIMEOUT_S = 1.0
PG_POOL_MAX = 10
# Server-side limits of every session of the application role, set on the role
# (`bookcluster/local/postgres_server.py`) and again by our pools. A client-side deadline
# cannot help when the client itself stops (SIGSTOP, partition, a stuck event
# loop): its session would keep its row locks until TCP gives up, hours later,
# and every write to those seats would wait. Against the 1.2 s write deadline
# (`bookcluster/seats/home.py`): a lock wait ends before it (503, never a hang), no
# statement of ours takes 2 s, and a session silent inside a transaction for
# 5 s is ended by the server, its locks released.
PG_SESSION_LIMITS = {
    "lock_timeout": "1s",
    "statement_timeout": "2s",
    "idle_in_transaction_session_timeout": "5s",
}
# Every statement of ours has the same shape whatever its values (one show, one user,
# a few seats), and most of a primary's CPU per hold went on planning them again for
# each call (plpgsql's plan cache plans custom plans first): generic plans, planned
# once per session, cut a hold's statement 0.49-0.51 -> 0.37-0.40 ms (pgbench).
# Set on the role with the limits, so every session of it plans so.
PG_PLANS = {"plan_cache_mode": "force_generic_plan"}
PG_ROLE_SETTINGS = {**PG_SESSION_LIMITS, **PG_PLANS}
# Operator tools run as the same role but may legitimately run long (seeding a
# big catalog with COPY, migrations, reset's TRUNCATE waiting for the nodes,
# the audit): they lift the limits for their own session, and plan their one-off
# queries for the values they pass (PostgreSQL's default).
PG_TOOL_SESSION = {**dict.fromkeys(PG_SESSION_LIMITS, "0"), "plan_cache_mode": "auto"}
PG_DATABASE = "bookcluster"
PG_USER = "bookcluster"  # the application role: owns the schema, not a superuser
PG_ADMIN = "bookcluster_admin"  # the superuser: only the launcher uses it


def route_key(from_region: str, target: Endpoint) -> str:
    """Key of `routes`: a connection from `from_region` to `target`."""
    return f"{from_region}>{target}"


def load_routes(path: Path) -> dict[str, Endpoint]:
    """A routes file (written by the launcher's WAN proxy plan): key -> "host:port"."""
    routes = {}
    for key, via in json.loads(path.read_text()).items():
        host, _, port = str(via).partition(":")
        routes[key] = Endpoint(host, int(port))
    return routes


class NoPrimary(ConnectionError):
    """No member of a region's PostgreSQL accepts writes right now: a failover is under
    way, or every member is down. A connection error (OSError) like any other outage."""


def pg_dsn(endpoints: Endpoint | Sequence[Endpoint], database: str = PG_DATABASE) -> str:
    """Where to connect, without credentials (safe to print); see `pg_login`. Several
    endpoints (a region's members) make a multi-host DSN that only the primary satisfies."""
    members = [endpoints] if isinstance(endpoints, Endpoint) else list(endpoints)
    hosts = ",".join(str(ep) for ep in members)
    attrs = "?target_session_attrs=read-write" if len(members) > 1 else ""
    return f"postgresql://{PG_USER}@{hosts}/{database}{attrs}"


def region_dsn(region: Region, database: str = PG_DATABASE) -> str:
    """The multi-host DSN of a region's primary, e.g. for psql."""
    return pg_dsn(region.pg_members, database)


async def connect_primary(members: Sequence[Endpoint], secrets: Secrets | None = None, *,
                          admin: bool = False, database: str = PG_DATABASE,
                          **kwargs: Any) -> asyncpg.Connection:
    """A connection to whichever of `members` accepts writes (keyword arguments go to
    asyncpg.connect; with `secrets`, log in as the application role or the admin).

    Every member is dialled at once, each with the whole `timeout`: asyncpg's own
    multi-host connect tries them in turn within one timeout, so a frozen member
    (SIGSTOP, a hung machine: the kernel accepts, nobody answers) listed first would
    use it all up and the live primary would never be reached. Raises NoPrimary when
    no member is writable or reachable; a refusal of every member (a wrong password) as
    itself.
    """
    if secrets is not None:
        kwargs = {**pg_login(secrets, admin=admin), **kwargs}
    kwargs["target_session_attrs"] = "read-write"
    tasks = [asyncio.create_task(asyncpg.connect(pg_dsn(ep, database), **kwargs))
             for ep in members]
    errors: list[BaseException] = []
    winner = None
    try:
        for attempt in asyncio.as_completed(tasks):
            try:
                winner = await attempt
            except Exception as exc:  # noqa: BLE001 - another member may still answer
                errors.append(exc)
                continue
            return winner
    finally:
        for task in tasks:
            task.cancel()
            task.add_done_callback(functools.partial(_discard, keep=winner))
    # A refusal that is not an outage (wrong password, no such database) is raised as
    # itself, unless it came from a standby that has not caught up (then it is an outage).
    refusals = [e for e in errors if isinstance(e, asyncpg.PostgresError)
                and not isinstance(e, asyncpg.CannotConnectNowError)]
    if refusals and len(refusals) == len(errors):
        raise refusals[0]
    raise NoPrimary(f"no writable PostgreSQL among {', '.join(map(str, members))}: "
                    + "; ".join(f"{type(e).__name__}: {e}" for e in errors)) from errors[-1]


def _discard(task: asyncio.Task[asyncpg.Connection], keep: asyncpg.Connection | None) -> None:
    """Close a connection that lost the race; retrieve any error (none is 'never
    retrieved')."""
    if not task.cancelled() and task.exception() is None and task.result() is not keep:
        task.result().terminate()


def pg_login(secrets: Secrets, *, admin: bool = False) -> dict[str, str]:
    """Keyword arguments of asyncpg.connect/create_pool: the role and its password."""
    if admin:
        return {"user": PG_ADMIN, "password": secrets.pg_admin_password}
    return {"user": PG_USER, "password": secrets.pg_password}


def redis_url(endpoint: Endpoint, password: str | None = None) -> str:
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{endpoint.host}:{endpoint.port}/0"


class WritesRefused(aioredis.ConnectionError):
    """A Redis server refused a write because it may not take one now: it is a replica
    (READONLY: demoted by a failover, or a failover is under way) or a master with no
    replica in sync (NOREPLICAS, `min-replicas-to-write`). An outage like a lost
    connection: nothing was written, and the connection is dropped, so the next one
    asks Sentinel where the master is."""


def _refuses_writes(exc: ResponseError) -> bool:
    # Inside a Lua script (Redis 6) the server's error is wrapped: "Error running
    # script ... -READONLY You can't write ...", so match the text too.
    text = str(exc)
    return isinstance(exc, ReadOnlyError) or "-READONLY " in text or "NOREPLICAS" in text


class _RefusalsAreOutages(Connection):
    async def read_response(self, disable_decoding: bool = False,
                            timeout: float | None = None,  # noqa: ASYNC109 - redis-py's
                            *, disconnect_on_error: Any = True,
                            push_request: bool | None = False) -> Any:
        # `disconnect_on_error: Any`: redis-py's sentinel connection declares it a float.
        try:
            return await super().read_response(disable_decoding, timeout,
                                               disconnect_on_error=disconnect_on_error,
                                               push_request=push_request)
        except ResponseError as exc:
            if not _refuses_writes(exc):
                raise
            await self.disconnect()  # also drops any reply still unread (a pipeline)
            raise WritesRefused(f"{self.host}:{self.port}: {exc}") from exc


class _MasterConnection(_RefusalsAreOutages, SentinelManagedConnection):
    """Connects to wherever the pool's sentinels say the master is now."""


class _Sentinels(Sentinel):
    """redis-py's Sentinel client; each master it finds is dialled through `route` (the
    WAN proxy's listener for it, when there is one)."""

    def __init__(self, sentinels: list[tuple[str, int]], route: Callable[[Endpoint], Endpoint],
                 **kwargs: Any) -> None:
        super().__init__(sentinels, **kwargs)
        self._route = route

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        host, port = await super().discover_master(service_name)
        ep = self._route(Endpoint(str(host), int(port)))
        return ep.host, ep.port


class _MasterPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """A bounded, blocking pool (like `make_redis`'s) of connections to the master
    Sentinel names; it owns its sentinel clients."""

    async def aclose(self) -> None:
        await super().aclose()
        await self.sentinel_manager.aclose()


def _pool_kwargs(secrets: Secrets, timeout_s: float) -> dict[str, Any]:
    return {
        "max_connections": REDIS_POOL_MAX,
        "timeout": max(REDIS_POOL_WAIT_S, timeout_s),
        "password": secrets.redis_password,
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
        "socket_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": True,
        # No CLIENT SETINFO: redis-py would look its own version up in the installed
        # packages' metadata for every new connection (a profiled 7 % of a home node's
        # CPU while its pool filled) and pay a round trip to tell the server.
        "driver_info": None,
    }


def make_redis(endpoint: Endpoint, secrets: Secrets, *,
               timeout_s: float = REDIS_COMMAND_TIMEOUT_S) -> aioredis.Redis:
    """A client whose commands wait for one of `REDIS_POOL_MAX` connections."""
    pool = aioredis.BlockingConnectionPool(
        host=endpoint.host, port=endpoint.port, connection_class=_RefusalsAreOutages,
        **_pool_kwargs(secrets, timeout_s))
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


def _direct(endpoint: Endpoint) -> Endpoint:
    return endpoint


def make_master(topology: Topology, region: str, *, near: str | None = None,
                route: Callable[[Endpoint], Endpoint] = _direct,
                timeout_s: float = REDIS_COMMAND_TIMEOUT_S) -> aioredis.Redis:
    """A client of `region`'s Redis master, wherever it is now: each new connection asks
    the sentinels (region `near`'s first: the caller's own) for the master's address,
    so after a failover the next connection goes to the new master. Idle connections to
    the old one are dropped once a sentinel names another; one that is told READONLY
    or NOREPLICAS drops itself (`WritesRefused`). While no sentinel names a master
    that is up (it just died; the failover is under way), commands fail at once with
    `MasterNotFoundError`, a ConnectionError. Without sentinels in the topology, the
    client talks to the topology's master address."""
    secrets = topology.secrets
    sentinels = topology.sentinels(first=near)
    if not sentinels:
        return make_redis(route(topology.region(region).redis_master), secrets,
                          timeout_s=timeout_s)
    manager = _Sentinels(
        [(ep.host, ep.port) for ep in map(route, sentinels)], route,
        sentinel_kwargs={"password": secrets.redis_password,
                         "socket_timeout": SENTINEL_TIMEOUT_S,
                         "socket_connect_timeout": SENTINEL_TIMEOUT_S,
                         "retry": Retry(NoBackoff(), 0), "driver_info": None})
    # SentinelConnectionPool.__init__ is untyped in redis-py.
    pool = _MasterPool(region, manager, connection_class=_MasterConnection,  # type: ignore[no-untyped-call]
                       **_pool_kwargs(secrets, timeout_s))
    return aioredis.Redis.from_pool(pool)


async def make_pg_pool(members: Sequence[Endpoint], secrets: Secrets, *,
                       max_size: int = PG_POOL_MAX) -> asyncpg.Pool:
    """A pool on a region's primary, whichever member that is: a connection that
    breaks in a failover is dropped, and the next one goes to the new primary."""
    async def connect(_dsn: str, **kwargs: Any) -> asyncpg.Connection:
        return await connect_primary(members, **kwargs)

    return await asyncpg.create_pool(
        pg_dsn(members),
        connect=connect,
        **pg_login(secrets),
        min_size=0,
        max_size=max_size,
        timeout=PG_CONNECT_TIMEOUT_S,
        command_timeout=PG_COMMAND_TIMEOUT_S,
        # Idle connections to a region that went away are dropped, not kept broken.
        max_inactive_connection_lifetime=60.0,
        reset=_no_session_state,
        server_settings=PG_ROLE_SETTINGS,  # also where the role lacks them (not our launcher)
    )


async def _no_session_state(conn: asyncpg.Connection) -> None:
    """Our code keeps no session state (no LISTEN, SET or session locks), so a
    released connection needs no reset query: one round trip less per use, which
    matters on a pool to another region."""


class Connections:
    """Owns the clients of one node (or worker) living in `local_region`."""

    def __init__(self, topology: Topology, local_region: str,
                 routes: Mapping[str, Endpoint] | None = None) -> None:
        self.topology = topology
        self.local_region = local_region
        # Cross-region connections may go through a WAN proxy (see bookcluster/local/wan.py).
        self._routes = dict(routes or {})
        self._masters: dict[str, aioredis.Redis] = {}
        self._replicas: dict[str, aioredis.Redis] = {}
        self._pg: dict[str, asyncpg.Pool] = {}
        self._closed = False

    async def open(self) -> Connections:
        for name in self.topology.regions:
            await self._open_region(self.topology, name)
        return self

    async def adopt(self, topology: Topology) -> None:
        """Route by a newer topology epoch: clients for the regions it adds, made as
        `open` makes those of the regions a process starts with (a master that follows
        Sentinel). Regions it keeps keep their clients (their stores' addresses never
        change live)."""
        for name in topology.regions:
            if name not in self._masters:
                await self._open_region(topology, name)
        self.topology = topology

    async def _open_region(self, topology: Topology, name: str) -> None:
        local, region = topology.region(self.local_region), topology.region(name)
        secrets = topology.secrets
        self._masters[name] = make_master(topology, name, near=self.local_region,
                                          route=self.route)
        self._replicas[name] = make_redis(local.redis_replicas[name], secrets)
        self._pg[name] = await make_pg_pool([self.route(m) for m in region.pg_members],
                                            secrets)

    def route(self, target: Endpoint) -> Endpoint:
        return self._routes.get(route_key(self.local_region, target), target)

    def redis_master(self, region: str) -> aioredis.Redis:
        return self._masters[region]

    def redis_replica(self, source_region: str) -> aioredis.Redis:
        """This region's replica of `source_region`'s master."""
        return self._replicas[source_region]

    def pg_primary(self, region: str) -> asyncpg.Pool:
        return self._pg[region]

    def pg_catalog(self) -> asyncpg.Pool:
        """The local region's PostgreSQL, which holds the whole catalog."""
        return self._pg[self.local_region]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for client in [*self._masters.values(), *self._replicas.values()]:
            await client.aclose()
        for pool in self._pg.values():
            await pool.close()

    def terminate(self) -> None:
        """Hard stop without waiting for in-flight queries."""
        self._closed = True
        for pool in self._pg.values():
            pool.terminate()

    async def __aenter__(self) -> Connections:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
