"""Recent failovers of every region's stores, for the operator page (`/ops/overview`).

Each comes from a record the cluster keeps anyway, readable from any node:
- **Redis**: the mirror reconciler logs every new run of a region's master with
  the generation it gave it and the master's address (`redis_master_log` in the
  region's PostgreSQL). Another address than the run before is a promotion by
  Sentinel; the same address is a restart. The first run is no failover.
- **PostgreSQL**: Patroni's `GET /history` (its timeline history in the DCS): each
  new timeline is a promotion, with its time and the new leader. A restart makes a
  new timeline too, with the same leader: only a change of leader is listed (the
  first timeline's leader is the member that bootstrapped, the region's first).
Only promotions are listed, never restarts (the Redis log records both).
A region whose record does not answer is named, never guessed at.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import aiohttp

from bookcluster.stores import patroni_api
from bookcluster.stores.connections import Connections

SHOWN = 10
RUNS_READ = 200  # a master's runs read to find the last SHOWN promotions among restarts
TIMEOUT_S = 1.0
# One row per run (a pass that failed after logging logs the same run again), each
# with the address of the run before it.
REDIS_RUNS = """
SELECT generation, master, seen_at, lag(master) OVER (ORDER BY generation) AS before
FROM (SELECT DISTINCT ON (run_id) generation, master, run_id, seen_at
      FROM redis_master_log ORDER BY run_id, generation) runs
ORDER BY generation DESC LIMIT $1"""


async def _redis(connections: Connections, region: str) -> list[dict[str, Any]]:
    async with connections.pg_primary(region).acquire(timeout=TIMEOUT_S) as conn:
        rows = await conn.fetch(REDIS_RUNS, RUNS_READ, timeout=TIMEOUT_S)
    return [{"store": "redis", "region": region, "at": r["seen_at"].isoformat(),
             "kind": "promoted", "to": r["master"], "from": r["before"],
             "generation": r["generation"]}
            for r in rows if r["before"] is not None and r["master"] != r["before"]]


def leader_changes(history: list[Any], first_leader: str | None) -> list[list[Any]]:
    """The entries of Patroni's history ([timeline that ended, lsn, reason, time, new
    leader?]) whose new leader is another member than the one before (a restart
    promotes the same one again). `first_leader` led timeline 1; an entry whose leader
    before is not known is kept."""
    out = []
    before: str | None = None
    for entry in history:
        if not (isinstance(entry, list) and len(entry) >= 4):
            continue
        if int(entry[0]) == 1:
            before = first_leader
        leader = entry[4] if len(entry) > 4 else None
        if leader is None or before is None or leader != before:
            out.append(entry)
        before = leader
    return out


async def _postgres(http: aiohttp.ClientSession, connections: Connections,
                    region: str) -> list[dict[str, Any]]:
    """Patroni's history from the first member that answers: entries are
    [timeline, lsn, reason, timestamp, new leader?], one per timeline that ended."""
    members = connections.topology.region(region).pg_api
    if not members:
        return []
    errors = []
    for api in members:
        try:
            async with http.get(f"http://{api}/history",
                                timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as resp:
                history = await resp.json(content_type=None)
        except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            errors.append(f"{api}: {type(exc).__name__}")
            continue
        first = await _first_member(f"http://{api}", f"http://{members[0]}")
        return [{"store": "postgres", "region": region, "at": entry[3],
                 "kind": "promoted", "to": entry[4] if len(entry) > 4 else None,
                 "timeline": int(entry[0]) + 1, "reason": entry[2]}
                for entry in leader_changes(history if isinstance(history, list) else [],
                                            first)]
    raise OSError("; ".join(errors))


async def _first_member(api: str, first_api: str) -> str | None:
    """The name of the region's first member (the one that bootstraps, so timeline 1's
    leader), from the cluster view; None when it is not in it."""
    try:
        view = await asyncio.wait_for(patroni_api.cluster_view(api), TIMEOUT_S)
    except (OSError, aiohttp.ClientError, TimeoutError, patroni_api.PatroniError):
        return None
    return next((str(m["name"]) for m in view.get("members", [])
                 if str(m.get("api_url", "")).startswith(first_api) and m.get("name")), None)


async def recent_failovers(connections: Connections,
                           http: aiohttp.ClientSession) -> dict[str, Any]:
    """The latest failovers of every region, newest first."""
    regions = list(connections.topology.regions)
    jobs = [(f"{r} redis", _redis(connections, r)) for r in regions] + \
        [(f"{r} postgres", _postgres(http, connections, r)) for r in regions]
    found = await asyncio.gather(*(asyncio.wait_for(job, 2 * TIMEOUT_S) for _, job in jobs),
                                 return_exceptions=True)
    items = [f for batch in found if not isinstance(batch, BaseException) for f in batch]
    items.sort(key=lambda f: datetime.fromisoformat(f["at"]), reverse=True)
    unreachable = [name for (name, _), batch in zip(jobs, found, strict=True)
                   if isinstance(batch, BaseException)]
    return {"available": True, "items": items[:SHOWN], "unreachable": unreachable}
