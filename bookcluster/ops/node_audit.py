"""Node caches against PostgreSQL: the `node_cache` check of `bookcluster audit`.

Every node answers `GET /ops/seat-cache` (operator token) with, per cached
show, its version and a digest of its seat statuses as its seat map would show
them now. The audit computes the same digest from the home primary's
`show_seat` rows (a LOCKED row past its expiry is AVAILABLE, as on a seat map).
A change in flight makes a node differ from PostgreSQL for milliseconds, so a
differing show is asked again, with its statuses, RECHECKS times over about
1.6 s; only a difference that lasts through every look is reported, seat by seat.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bookcluster.node.auth import OPERATOR, mint
from bookcluster.seats.state import digest
from bookcluster.stores.connections import PG_TOOL_SESSION, connect_primary
from bookcluster.topology.model import Topology

RECHECKS = 4
RECHECK_INTERVAL_S = 0.4
NODE_TIMEOUT_S = 5.0
PG_CONNECT_TIMEOUT_S = 5.0
TOKEN_TTL_S = 300
AUDITOR = "bookcluster-audit"  # the operator token's `sub`
STATUSES = """
SELECT show_id, seat_id, CASE WHEN status = 'LOCKED' AND hold_expires_at <= now()
                              THEN 'AVAILABLE' ELSE status END AS status
FROM show_seat WHERE show_id = ANY($1::bigint[]) AND status <> 'AVAILABLE'"""

# show -> seat -> status, for seats that are not AVAILABLE
Statuses = dict[int, dict[str, str]]


@dataclass(frozen=True)
class CacheDiff:
    """A seat a node's cache shows otherwise than PostgreSQL, at every look."""
    node: str
    region: str  # the show's home region
    show_id: int
    seat_id: str
    cached: str
    truth: str
    version: int
    generation: int


@dataclass
class NodeAudit:
    checked: dict[str, int] = field(default_factory=dict)  # node -> cached shows compared
    diffs: list[CacheDiff] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)  # "node <name>" -> why


class NodeUnreachable(Exception):
    """A node did not answer its seat cache, or answered something else than 200."""


@dataclass(frozen=True)
class _Node:
    name: str  # as the node calls itself: region@host:port
    url: str


async def _cache(http: aiohttp.ClientSession, node: _Node,
                 show: int | None = None) -> list[dict[str, Any]]:
    url = f"{node.url}/ops/seat-cache" + ("" if show is None else f"?show={show}")
    try:
        async with http.get(url) as resp:
            if resp.status != 200:
                raise NodeUnreachable(f"HTTP {resp.status}: {(await resp.text())[:200]}")
            return list((await resp.json())["shows"])
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise NodeUnreachable(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc


async def _truth(topology: Topology, shows_by_region: dict[str, set[int]]) -> Statuses:
    """Statuses of these shows now, each from its home region's primary (its leader)."""
    async def one(region: str, shows: set[int]) -> Statuses:
        # The current leader, not the topology's first member: after a failover that
        # one is a standby, or down while it rejoins.
        conn = await connect_primary(topology.region(region).pg_members, topology.secrets,
                                     timeout=PG_CONNECT_TIMEOUT_S,
                                     server_settings=PG_TOOL_SESSION)
        try:
            rows = await conn.fetch(STATUSES, sorted(shows))
        finally:
            await conn.close()
        out: Statuses = {show: {} for show in shows}
        for r in rows:
            if r["status"] != "AVAILABLE":
                out[r["show_id"]][r["seat_id"]] = r["status"]
        return out

    found = await asyncio.gather(*(one(r, s) for r, s in shows_by_region.items() if s))
    return {show: seats for part in found for show, seats in part.items()}


async def audit_node_caches(topology: Topology, regions: Collection[str]) -> NodeAudit:
    """Compare every node's cached shows of `regions` (those whose primary answered
    the audit) with PostgreSQL. Raises asyncpg/OSError if a primary stops answering."""
    report = NodeAudit()
    try:
        token = mint(topology, AUDITOR, TOKEN_TTL_S, (OPERATOR,))
    except ValueError as exc:  # RS256/ES256: tokens come from the identity provider
        report.unreachable["node caches"] = f"no operator token: {exc}"
        return report
    nodes = [_Node(f"{r}@{ep.host}:{ep.port}", f"http://{ep.host}:{ep.port}")
             for r in topology.regions for ep in topology.region(r).nodes]
    timeout = aiohttp.ClientTimeout(total=NODE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout,
                                     headers={"Authorization": f"Bearer {token}"}) as http:
        listings = await asyncio.gather(*(_cache(http, n) for n in nodes),
                                        return_exceptions=True)
        cached: dict[tuple[_Node, int], dict[str, Any]] = {}
        for node, listing in zip(nodes, listings, strict=True):
            if isinstance(listing, NodeUnreachable):
                report.unreachable[f"node {node.name}"] = str(listing)
                continue
            if isinstance(listing, BaseException):
                raise listing
            mine = [s for s in listing if s["region"] in regions]
            report.checked[node.name] = len(mine)
            cached.update(((node, s["show_id"]), s) for s in mine)
        truth = await _truth(topology, _by_region(cached))
        differing = {key: entry for key, entry in cached.items()
                     if entry["digest"] != digest(truth[key[1]])}
        for _ in range(RECHECKS):
            if not differing:
                break
            await asyncio.sleep(RECHECK_INTERVAL_S)
            differing, truth = await _look_again(http, topology, differing, report)
    for (node, show), entry in sorted(differing.items(), key=lambda kv: (kv[0][0].name, kv[0][1])):
        seats, want = entry["seats"], truth[show]
        report.diffs += [CacheDiff(node.name, entry["region"], show, seat,
                                   seats.get(seat, "AVAILABLE"), want.get(seat, "AVAILABLE"),
                                   entry["version"], entry["generation"])
                         for seat in sorted(seats.keys() | want.keys())
                         if seats.get(seat) != want.get(seat)]
    return report


async def _look_again(http: aiohttp.ClientSession, topology: Topology,
                      differing: dict[tuple[_Node, int], dict[str, Any]], report: NodeAudit
                      ) -> tuple[dict[tuple[_Node, int], dict[str, Any]], Statuses]:
    """The shows that still differ (with their statuses), and PostgreSQL's, now."""
    keys = list(differing)
    answers = await asyncio.gather(*(_cache(http, node, show) for node, show in keys),
                                   return_exceptions=True)
    truth = await _truth(topology, _by_region(differing))
    still = {}
    for (node, show), answer in zip(keys, answers, strict=True):
        if isinstance(answer, NodeUnreachable):
            report.unreachable[f"node {node.name}"] = str(answer)
        elif isinstance(answer, BaseException):
            raise answer
        elif answer and answer[0]["seats"] != truth[show]:  # [] : no longer cached
            still[(node, show)] = answer[0]
    return still, truth


def _by_region(entries: dict[tuple[_Node, int], dict[str, Any]]) -> dict[str, set[int]]:
    out: dict[str, set[int]] = defaultdict(set)
    for (_, show), entry in entries.items():
        out[entry["region"]].add(show)
    return out
