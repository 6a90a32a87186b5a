"""The operator's view of the whole cluster as one node sees it (`GET /ops/overview`).

Every process the topology names is probed directly, through the one prober
(`bookcluster.stores.probe`), with the node's own credentials, each within
PROBE_TIMEOUT_S, so a stopped server shows as down instead of stalling the page:
Redis masters and replicas (role now, link, replication offset -> lag in bytes behind
the source region's master now, wherever Sentinel put it), PostgreSQL members (as the
application role: in recovery or not, WAL position; and as Patroni names them now:
leader, sync standby or replica, with Patroni's lag on the member that lags: `postgres`,
one entry a member; `pg_primary` and `pg_standby` are the topology's slots, kept for
scripts), every node's `/readyz`, every worker's
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

from bookcluster.node.failovers import recent_failovers
from bookcluster.stores import patroni_api, probe
from bookcluster.stores.connections import Connections, pg_dsn, pg_login
from bookcluster.topology.model import Endpoint, Region, Topology

PROBE_TIMEOUT_S = 1.0
SENTINEL_TIMEOUT_S = 0.3  # per sentinel: a frozen one is skipped for the next
READYZ_TIMEOUT_S = 2.5  # a node's /readyz itself waits up to 1 s per store
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
    found = await probe.redis_replication(endpoint.host, endpoint.port, password,
                                          timeout_s=PROBE_TIMEOUT_S)
    out: dict[str, Any] = {"up": found.healthy, "role": found.role, "offset": found.offset}
    if found.role == "replica":
        out["link"] = found.link
    return out


async def _sentinel_master(topology: Topology, region: str) -> dict[str, Any]:
    """Where the first sentinel that answers (the region's own first) sees its master."""
    try:
        master, sentinel = await probe.sentinel_master(topology, region, SENTINEL_TIMEOUT_S)
    except LookupError as exc:
        return {"up": False, "error": str(exc)}
    return {"up": True, "address": str(master), "sentinel": str(sentinel)}


async def _postgres(endpoint: Endpoint, topology: Topology) -> dict[str, Any]:
    recovery, lsn = await probe.pg_position(pg_dsn(endpoint), pg_login(topology.secrets),
                                            PROBE_TIMEOUT_S)
    return {"up": True, "role": "standby" if recovery else "primary", "lsn": lsn}


async def _patroni_view(region: Region) -> dict[str, Any]:
    """Patroni's cluster view from the first member that answers: each member's role
    now, its timeline and its lag behind the leader."""
    view = await patroni_api.any_cluster_view(region)
    return {"up": True, "members": view.get("members", [])}


def pg_members(region: Region, probes: list[dict[str, Any]],
               view: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The region's PostgreSQL members as they are now: Patroni's role (leader,
    sync_standby, replica) where it answers, else primary or standby as the server
    says; lag on the member that lags (Patroni's, else WAL positions behind the one
    that is the primary now)."""
    members = {f"{m.get('host')}:{m.get('port')}": m
               for m in (view or {}).get("members", []) if isinstance(m, dict)}
    out = []
    for ep, probed in zip(region.pg_members, probes, strict=True):
        seen = members.get(str(ep), {})
        entry = {"address": str(ep), **probed, "member": seen.get("name"),
                 "role_now": seen.get("role") or (probed.get("role") if probed.get("up")
                                                  else None)}
        entry.pop("lag_bytes", None)
        if entry["role_now"] not in ("leader", "primary") and isinstance(seen.get("lag"), int):
            entry["lag_bytes"] = seen["lag"]
        out.append(entry)
    primary = next((m for m in out if m["role_now"] in ("leader", "primary")), None)
    for m in out:
        if primary is not None and m is not primary and "lag_bytes" not in m:
            _lag(primary, m, "lsn")
    return out


def redis_lags(regions: dict[str, dict[str, Any]]) -> None:
    """Every Redis copy of a region's master gets its lag behind that master as it is
    now (Sentinel's, else the server of that region that says it is a master)."""
    for source, card in regions.items():
        servers = [card["redis_master"]] + [r for c in regions.values()
                                            for r in c["redis_replicas"] if r["source"] == source]
        now = (card.get("redis_master_now") or {}).get("address")
        master = next((s for s in servers if s.get("role") == "master"
                       and (now is None or s["address"] == now)), None) or next(
            (s for s in servers if s.get("role") == "master"), None)
        for server in servers:
            server.pop("lag_bytes", None)
            if master is not None and server is not master and server.get("role") == "replica":
                _lag(master, server, "offset")


def _lag(source: dict[str, Any], copy: dict[str, Any], field: str) -> None:
    """`copy` gets `lag_bytes` behind `source` when both answered."""
    lag = probe.lag_bytes(source.get(field), copy.get(field))
    if copy.get("up") and lag is not None:
        copy["lag_bytes"] = lag


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
        jobs[f"node:{ep}"] = _bounded(probe.readiness(http, f"http://{ep}"), READYZ_TIMEOUT_S)
    if region.worker is not None:
        jobs["worker"] = _bounded(probe.worker_state(http, f"http://{region.worker}"),
                                  PROBE_TIMEOUT_S)
    if topology.sentinels():
        jobs["sentinel"] = _bounded(_sentinel_master(topology, name), 2 * PROBE_TIMEOUT_S)
    if region.pg_api:
        jobs["patroni"] = _bounded(_patroni_view(region), 2 * PROBE_TIMEOUT_S)
    found = dict(zip(jobs, await asyncio.gather(*jobs.values()), strict=True))
    probes = [found["pg_primary"]] + ([found["pg_standby"]] if "pg_standby" in found else [])
    return {
        "postgres": pg_members(region, probes, found.get("patroni")),
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
    redis_lags(regions)
    for region in regions.values():
        if region["pg_standby"] is not None:  # the slots' fields, as before
            _lag(region["pg_primary"], region["pg_standby"], "lsn")
    return {"at": datetime.now(UTC).isoformat(), "node": node, "epoch": topology.epoch,
            "regions": regions, "failovers": failovers, "moves": moves,
            "audit": last_audit(topology)}
