"""Health probes for every kind of process, and replication lag for replicas.

PostgreSQL members are asked through Patroni's REST API (`bookcluster.stores.patroni_api`):
their role changes with every failover, so a member's row says what it is now.
Redis servers likewise (Sentinel promotes and demotes them): each says its role
now and, as a replica, the master it follows; a sentinel says where it sees
every region's master.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from bookcluster.stores import patroni_api
from bookcluster.stores.connections import pg_login
from bookcluster.topology.model import Region
from bookcluster.topology.secrets import Secrets

PROBE_TIMEOUT_S = 2.0


def _redis_client(host: str, port: int, secrets: Secrets) -> aioredis.Redis:
    return aioredis.Redis(host=host, port=port, socket_timeout=PROBE_TIMEOUT_S,
                          password=secrets.redis_password,
                          socket_connect_timeout=PROBE_TIMEOUT_S, decode_responses=True)


async def _redis_info(host: str, port: int, secrets: Secrets) -> dict[str, Any]:
    client = _redis_client(host, port, secrets)
    try:
        info: dict[str, Any] = await client.info("replication")
        return info
    finally:
        await client.aclose()


async def _pg_fetchrow(address: str, query: str, secrets: Secrets) -> asyncpg.Record | None:
    # As the superuser: the replication views are not the application role's to read.
    conn = await asyncpg.connect(address, timeout=PROBE_TIMEOUT_S,
                                 **pg_login(secrets, admin=True))
    try:
        return await conn.fetchrow(query, timeout=PROBE_TIMEOUT_S)
    finally:
        await conn.close()


async def probe_redis(proc: dict[str, Any], secrets: Secrets) -> dict[str, Any]:
    """Any Redis server, whatever the topology called it: healthy as a master, or as a
    replica streaming from its master (`master`, as it dials it: maybe a WAN proxy)."""
    info = await _redis_info(proc["host"], proc["port"], secrets)
    if info.get("role") == "master":
        return {"healthy": True, "redis_role": "master",
                "repl_offset": info.get("master_repl_offset")}
    link = info.get("master_link_status")
    return {"healthy": link == "up", "redis_role": "replica", "link": link,
            "master": f"{info.get('master_host')}:{info.get('master_port')}",
            "repl_offset": info.get("slave_repl_offset")}


async def probe_redis_sentinel(proc: dict[str, Any], secrets: Secrets) -> dict[str, Any]:
    """Healthy when it answers and watches masters; `sentinel_masters`: where it sees each
    region's master now, with Sentinel's flags for it (`master`, or e.g. `s_down`)."""
    client = _redis_client(proc["host"], proc["port"], secrets)
    try:
        masters = await client.sentinel_masters()
    finally:
        await client.aclose()
    assert isinstance(masters, dict)  # redis-py parses SENTINEL MASTERS into name -> state
    seen = {name: {"address": f"{state['ip']}:{state['port']}",
                   "flags": state.get("flags", ""),
                   "replicas": state.get("num-slaves"),
                   "other_sentinels": state.get("num-other-sentinels")}
            for name, state in masters.items()}
    return {"healthy": bool(seen), "sentinel_masters": seen}


async def probe_pg_primary(proc: dict[str, Any], secrets: Secrets) -> dict[str, Any]:
    """A plain PostgreSQL server of a tool (the benchmark's raw limits), not Patroni's."""
    row = await _pg_fetchrow(proc["address"],
                             "SELECT NOT pg_is_in_recovery() AS ok, "
                             "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS lsn", secrets)
    assert row is not None
    return {"healthy": bool(row["ok"]), "repl_offset": row["lsn"]}


async def probe_pg_member(proc: dict[str, Any], secrets: Secrets) -> dict[str, Any]:
    """Healthy: PostgreSQL runs and is the primary, or a replica streaming from it.
    Also the member's role, the leader, the timeline and its lag as Patroni sees them."""
    state = await patroni_api.member_state(proc["api"])
    role = state.get("role")
    running = state.get("state") == "running"
    streaming = state.get("replication_state") == "streaming"
    row: dict[str, Any] = {
        "healthy": running and (role == "primary" or streaming),
        "pg_role": role, "timeline": state.get("timeline"),
        "link": state.get("replication_state"), "pg_state": state.get("state")}
    try:
        view = await patroni_api.cluster_view(proc["api"])
    except patroni_api.PatroniError:
        return row
    me = next((m for m in view.get("members", []) if m.get("api_url", "").startswith(
        proc["api"])), None)
    leader = patroni_api.leader(view)
    row["leader"] = leader["name"] if leader else None
    if me is not None:
        row["pg_role"] = me.get("role", role)  # leader | sync_standby | replica
        row["member"] = me.get("name")
        if isinstance(me.get("lag"), int):
            row["lag_bytes"] = me["lag"]
    return row


async def probe_etcd(proc: dict[str, Any], secrets: Secrets) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(f"{proc['address']}/health") as resp:
            body = await resp.json(content_type=None)
            return {"healthy": resp.status == 200 and body.get("health") == "true"}


async def probe_node(proc: dict[str, Any], secrets: Secrets) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(f"{proc['address']}/healthz") as resp:
            out: dict[str, Any] = {"healthy": resp.status == 200}
            if resp.content_type == "application/json":
                body = await resp.json()
                if isinstance(body, dict) and isinstance(body.get("epoch"), int):
                    out["epoch"] = body["epoch"]  # the topology epoch it routes by
            return out


PROBES: dict[str, Callable[[dict[str, Any], Secrets], Awaitable[dict[str, Any]]]] = {
    "redis-master": probe_redis,
    "redis-replica": probe_redis,
    "redis-sentinel": probe_redis_sentinel,
    "pg-primary": probe_pg_primary,
    "pg-member": probe_pg_member,
    "etcd": probe_etcd,
    "node": probe_node,
    "worker": probe_node,
    "gateway": probe_node,
    "wanproxy": probe_node,
}


async def probe(proc: dict[str, Any], secrets: Secrets) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(PROBES[proc["role"]](proc, secrets), PROBE_TIMEOUT_S + 0.5)
    except (TimeoutError, OSError, aiohttp.ClientError, aioredis.RedisError,
            asyncpg.PostgresError, asyncpg.InterfaceError, patroni_api.PatroniError) as exc:
        return {"healthy": False, "error": f"{type(exc).__name__}: {exc}".strip()}


async def probe_all(processes: Iterable[dict[str, Any]],
                    secrets: Secrets) -> list[dict[str, Any]]:
    """Probe every process; replicas get `lag_bytes` against their source's offset."""
    procs = list(processes)
    results = await asyncio.gather(*(probe(p, secrets) for p in procs))
    by_name = {p["name"]: r for p, r in zip(procs, results, strict=True)}
    out = []
    for proc, result in zip(procs, results, strict=True):
        row = {**proc, **result}
        source = _source_of(proc, result, procs)
        if source in by_name and result.get("repl_offset") is not None:
            upstream = by_name[source].get("repl_offset")
            if upstream is not None:
                row["lag_bytes"] = max(0, int(upstream) - int(result["repl_offset"]))
        out.append(row)
    return out


def _source_of(proc: dict[str, Any], result: dict[str, Any],
               procs: list[dict[str, Any]]) -> str | None:
    """The process a Redis replica's lag is measured against: the one at the address it
    follows, else (it dials a WAN proxy) its region's first master. PostgreSQL members
    get theirs from Patroni."""
    if result.get("redis_role") != "replica":
        return None
    found: str | None = next((p["name"] for p in procs
                  if f"{p['host']}:{p['port']}" == result.get("master")), None)
    if found is not None:
        return found
    return f"{proc.get('source') or proc['region']}.redis.master"


async def scrape_metric(session: aiohttp.ClientSession, address: str, name: str,
                        **labels: str) -> float:
    """Sum of the samples `name` on a process's /metrics whose labels include `labels`."""
    async with session.get(f"{address}/metrics") as resp:
        text = await resp.text()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v
                                              for k, v in labels.items()))


async def wait_healthy(proc: dict[str, Any], timeout_s: float, alive: Callable[[], bool],
                       secrets: Secrets,
                       accept: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
    """Poll a process until healthy (or its probe passes `accept`); fail early if it died.
    Raises TimeoutError."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: dict[str, Any] = {}
    while asyncio.get_running_loop().time() < deadline:
        if not alive():
            raise RuntimeError(f"{proc['name']} exited during start-up; see {proc['log_path']}")
        last = await probe(proc, secrets)
        if last.get("healthy") or (accept is not None and accept(last)):
            return last
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{proc['name']} not healthy after {timeout_s:.0f}s: "
                       f"{last.get('error') or last}; see {proc['log_path']}")


async def wait_leader(region: Region, timeout_s: float,
                      alive: Callable[[], bool]) -> dict[str, Any]:
    """Poll the region's Patroni members until one runs as the primary (a leader was
    elected, and bootstrapped if new). Returns its state; raises TimeoutError."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: list[str] = []
    while asyncio.get_running_loop().time() < deadline:
        if not alive():
            raise RuntimeError(f"{region.name}: a PostgreSQL member exited during start-up; "
                               "see its log")
        last = []
        for api in patroni_api.api_urls(region):
            try:
                state = await patroni_api.member_state(api)
            except (TimeoutError, OSError, aiohttp.ClientError, patroni_api.PatroniError) as exc:
                last.append(f"{api}: {type(exc).__name__}")
                continue
            if state.get("role") == "primary" and state.get("state") == "running":
                return state
            last.append(f"{api}: {state.get('role')} {state.get('state')}")
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{region.name}: no PostgreSQL leader after {timeout_s:.0f}s "
                       f"({'; '.join(last)})")
