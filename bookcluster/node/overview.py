"""The operator's view of the whole cluster as one node sees it (`GET /ops/overview`).

Every process the topology names is probed directly with the node's own
credentials, each within PROBE_TIMEOUT_S, so a stopped server shows as down
instead of stalling the page: Redis masters and replicas (role, link,
replication offset -> lag in bytes behind the source master), PostgreSQL
primaries and standbys (as the application role: in recovery or not, WAL
position -> standby lag in bytes), every node's `/readyz`, every worker's
`/metrics` (queue depth, outbox backlog, mirror generation), and each region's
Redis master as the sentinels name it now. The last audit is the report
`bookcluster audit` left in the run folder. Theatre moves are the latest
`theatre_move` records of every region (`bookcluster topology move` writes them
in its source region); failovers are in `failovers.py`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from bookcluster.node.failovers import recent_failovers
from bookcluster.stores.connections import Connections, pg_dsn, pg_login
from bookcluster.topology.model import Endpoint, Topology

PROBE_TIMEOUT_S = 1.0
SENTINEL_TIMEOUT_S = 0.3  # per sentinel: a frozen one is skipped for the next
READYZ_TIMEOUT_S = 2.5  # a node's /readyz itself waits up to 1 s per store
WORKER_METRICS = ("bookcluster_queue_depth", "bookcluster_outbox_pending",
                  "bookcluster_mirror_generation")
WAL_POSITION = """
SELECT pg_is_in_recovery() AS recovery,
       (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
             ELSE pg_current_wal_lsn() END - '0/0'::pg_lsn)::bigint AS lsn"""
MOVES_SHOWN = 10
RECENT_MOVES = """
SELECT theatre_id AS theatre, source, target, from_epoch, to_epoch, step,
       started_at, updated_at, (detail->>'freeze_s')::float8 AS freeze_s,
       (SELECT sum(value::bigint) FROM jsonb_each_text(detail->'rows'))::bigint AS rows,
       (detail->>'holds')::bigint AS holds
FROM theatre_move ORDER BY id DESC LIMIT $1"""


def audit_report_path(topology: Topology) -> Path:
    """Where `bookcluster audit` leaves its last report (this host's run folder)."""
    return topology.settings.run_dir / "audit" / "last.json"


def _failure(exc: BaseException, timeout_s: float) -> dict[str, Any]:
    if isinstance(exc, TimeoutError):
        return {"up": False, "error": f"no answer within {timeout_s:g} s"}
    text = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    return {"up": False, "error": text[:300]}


async def _bounded(work: Awaitable[dict[str, Any]], timeout_s: float) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(work, timeout_s)
    except Exception as exc:  # any failure means down; say why
        return _failure(exc, timeout_s)


async def _redis(endpoint: Endpoint, password: str) -> dict[str, Any]:
    client = aioredis.Redis(host=endpoint.host, port=endpoint.port, password=password,
                            socket_timeout=PROBE_TIMEOUT_S,
                            socket_connect_timeout=PROBE_TIMEOUT_S, decode_responses=True)
    try:
        info = await client.info("replication")
    finally:
        await client.aclose()
    role = "master" if info.get("role") == "master" else "replica"
    out: dict[str, Any] = {"up": True, "role": role}
    if role == "master":
        out["offset"] = info.get("master_repl_offset")
    else:
        out["link"] = info.get("master_link_status")
        out["offset"] = info.get("slave_repl_offset")
        out["up"] = out["link"] == "up"
    return out


async def _sentinel_master(topology: Topology, region: str) -> dict[str, Any]:
    """Where the first sentinel that answers (the region's own first) sees its master."""
    errors = []
    for ep in topology.sentinels(first=region):
        client = aioredis.Redis(host=ep.host, port=ep.port,
                                password=topology.secrets.redis_password,
                                socket_timeout=SENTINEL_TIMEOUT_S,
                                socket_connect_timeout=SENTINEL_TIMEOUT_S, decode_responses=True)
        try:
            answer = await client.sentinel_get_master_addr_by_name(region)
        except (OSError, aioredis.RedisError) as exc:
            errors.append(f"{ep}: {type(exc).__name__}")
            continue
        finally:
            await client.aclose()
        if isinstance(answer, list | tuple) and len(answer) == 2:
            host, port = (str(part) for part in answer)
            return {"up": True, "address": f"{host}:{port}", "sentinel": str(ep)}
        errors.append(f"{ep}: does not watch {region}")
    return {"up": False, "error": "; ".join(errors) or "no sentinel answers"}


async def _postgres(endpoint: Endpoint, topology: Topology) -> dict[str, Any]:
    conn = await asyncpg.connect(pg_dsn(endpoint), timeout=PROBE_TIMEOUT_S,
                                 **pg_login(topology.secrets))
    try:
        row = await conn.fetchrow(WAL_POSITION, timeout=PROBE_TIMEOUT_S)
    finally:
        await conn.close(timeout=PROBE_TIMEOUT_S)
    assert row is not None
    return {"up": True, "role": "standby" if row["recovery"] else "primary", "lsn": row["lsn"]}


async def _node(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(f"{base}/readyz") as resp:
        body = await resp.json(content_type=None)
    return {"up": True, "ready": bool(body.get("ready")), "checks": body.get("checks", {})}


async def _worker(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(f"{base}/metrics") as resp:
        if resp.status != 200:
            return {"up": False, "error": f"/metrics answered {resp.status}"}
        text = await resp.text()
    queue: dict[str, int] = {}
    out: dict[str, Any] = {"up": True, "queue": queue}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "bookcluster_queue_depth":
                queue[sample.labels.get("state", "?")] = int(sample.value)
            elif sample.name == "bookcluster_outbox_pending":
                out["outbox_pending"] = int(sample.value)
            elif sample.name == "bookcluster_mirror_generation":
                out["mirror_generation"] = int(sample.value)
    return out


def _lag(source: dict[str, Any], copy: dict[str, Any], field: str) -> None:
    """`copy` gets `lag_bytes` behind `source` when both answered."""
    if copy.get("up") and source.get(field) is not None and copy.get(field) is not None:
        copy["lag_bytes"] = max(0, int(source[field]) - int(copy[field]))


async def _region(topology: Topology, name: str,
                  http: aiohttp.ClientSession) -> dict[str, Any]:
    region = topology.region(name)
    password = topology.secrets.redis_password
    jobs: dict[str, Awaitable[dict[str, Any]]] = {
        "redis_master": _bounded(_redis(region.redis_master, password), PROBE_TIMEOUT_S),
        "pg_primary": _bounded(_postgres(region.pg_primary, topology), 2 * PROBE_TIMEOUT_S),
    }
    for source, ep in region.redis_replicas.items():
        jobs[f"replica:{source}"] = _bounded(_redis(ep, password), PROBE_TIMEOUT_S)
    if region.pg_standby is not None:
        jobs["pg_standby"] = _bounded(_postgres(region.pg_standby, topology),
                                      2 * PROBE_TIMEOUT_S)
    for ep in region.nodes:
        jobs[f"node:{ep}"] = _bounded(_node(http, f"http://{ep}"), READYZ_TIMEOUT_S)
    if region.worker is not None:
        jobs["worker"] = _bounded(_worker(http, f"http://{region.worker}"), PROBE_TIMEOUT_S)
    if topology.sentinels():
        jobs["sentinel"] = _bounded(_sentinel_master(topology, name), 2 * PROBE_TIMEOUT_S)
    found = dict(zip(jobs, await asyncio.gather(*jobs.values()), strict=True))
    return {
        "redis_master_now": found.get("sentinel"),
        "redis_master": {"address": str(region.redis_master), **found["redis_master"]},
        "redis_replicas": [{"source": source, "address": str(ep), **found[f"replica:{source}"]}
                           for source, ep in region.redis_replicas.items()],
        "pg_primary": {"address": str(region.pg_primary), **found["pg_primary"]},
        "pg_standby": None if region.pg_standby is None else
        {"address": str(region.pg_standby), **found["pg_standby"]},
        "nodes": [{"address": str(ep), **found[f"node:{ep}"]} for ep in region.nodes],
        "worker": None if region.worker is None else
        {"address": str(region.worker), **found["worker"]},
    }


def last_audit(topology: Topology) -> dict[str, Any]:
    path = audit_report_path(topology)
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        return {"available": False, "note": f"no audit has run on this host ({path})"}
    except (OSError, ValueError) as exc:
        return {"available": False, "note": f"unreadable {path}: {exc}"}
    return {"available": True, **report}


async def recent_moves(connections: Connections) -> dict[str, Any]:
    """The latest theatre moves of every region (newest first), each as its source
    recorded it; a region that does not answer is named."""
    async def one(region: str) -> list[dict[str, Any]]:
        async with connections.pg_primary(region).acquire(timeout=PROBE_TIMEOUT_S) as conn:
            rows = await conn.fetch(RECENT_MOVES, MOVES_SHOWN, timeout=PROBE_TIMEOUT_S)
        return [{**dict(r), "started_at": r["started_at"].isoformat(),
                 "updated_at": r["updated_at"].isoformat()} for r in rows]

    regions = list(connections.topology.regions)
    found = await asyncio.gather(*(asyncio.wait_for(one(r), 2 * PROBE_TIMEOUT_S)
                                   for r in regions), return_exceptions=True)
    items = [m for f in found if not isinstance(f, BaseException) for m in f]
    items.sort(key=lambda m: m["started_at"], reverse=True)
    unreachable = [r for r, f in zip(regions, found, strict=True) if isinstance(f, BaseException)]
    return {"available": True, "items": items[:MOVES_SHOWN], "unreachable": unreachable}


NO_CONNECTIONS = {"available": False, "note": "asked without the node's connections"}


async def _records(connections: Connections | None,
                   http: aiohttp.ClientSession) -> tuple[dict[str, Any], dict[str, Any]]:
    """Recent failovers and moves, as the cluster recorded them."""
    if connections is None:
        return NO_CONNECTIONS, NO_CONNECTIONS
    failovers, moves = await asyncio.gather(recent_failovers(connections, http),
                                            recent_moves(connections))
    return failovers, moves


async def overview(topology: Topology, node: str,
                   connections: Connections | None = None) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=READYZ_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        names = list(topology.regions)
        # The probes and the records at once: the page waits for the slowest only.
        probed, (failovers, moves) = await asyncio.gather(
            asyncio.gather(*(_region(topology, name, http) for name in names)),
            _records(connections, http))
    regions = dict(zip(names, probed, strict=True))
    for region in regions.values():
        for replica in region["redis_replicas"]:
            _lag(regions[replica["source"]]["redis_master"], replica, "offset")
        if region["pg_standby"] is not None:
            _lag(region["pg_primary"], region["pg_standby"], "lsn")
    return {"at": datetime.now(UTC).isoformat(), "node": node, "epoch": topology.epoch,
            "regions": regions, "failovers": failovers, "moves": moves,
            "audit": last_audit(topology)}
