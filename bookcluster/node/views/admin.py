"""Operator routes (token with the `operator` role): the region-local job queues (each
region's outbox, `bookcluster/stores/jobqueue.py`), what this node's seat cache holds
(for `bookcluster audit`), and the whole cluster's health for the operator page
(`overview.py`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from bookcluster.booking import ids
from bookcluster.errors import InvalidInput
from bookcluster.node import access, overview
from bookcluster.node.answers import answer
from bookcluster.node.auth import Identity
from bookcluster.node.body import json_body
from bookcluster.node.typedefs import (
    bookings_key,
    catalog_key,
    connections_key,
    seatmaps_key,
    settings_key,
    swap_key,
)
from bookcluster.seats import keys
from bookcluster.seats.state import digest, now_ms
from bookcluster.stores import jobqueue


def _region(request: web.Request, value: Any) -> str:
    regions = request.app[settings_key].topology.regions
    if not isinstance(value, str) or value not in regions:
        raise InvalidInput(f"region must be one of {', '.join(regions)}", field="region")
    return value


@access.operator
async def job_counts(request: web.Request, caller: Identity) -> web.Response:
    home = request.app[bookings_key].home
    out = {}
    for region in request.app[settings_key].topology.regions:
        async with home.connection(region) as conn:
            out[region] = await jobqueue.counts(conn)
    return answer({"regions": out})


@access.operator
async def replay_jobs(request: web.Request, caller: Identity) -> web.Response:
    """Put dead-lettered jobs of a region back in its queue (all, or `job_ids`)."""
    body = await json_body(request)
    if not isinstance(body, dict):
        raise InvalidInput("body must be {\"region\": str, \"job_ids\"?: [str]}")
    region = _region(request, body.get("region"))
    job_ids = body.get("job_ids")
    if job_ids is not None and (not isinstance(job_ids, list) or len(job_ids) > 1000
                                or not all(isinstance(j, str) for j in job_ids)):
        raise InvalidInput("job_ids must be a list of at most 1000 strings", field="job_ids")
    async with request.app[bookings_key].home.connection(region) as conn:
        moved = await jobqueue.replay(conn, job_ids or None)
    return answer({"region": region, "replayed": moved})


@access.operator
async def seat_cache(request: web.Request, caller: Identity) -> web.Response:
    """This node's cached seat state: per show its mirror generation, version and a
    digest of its seat statuses; with `?show=ID` only that show, with the statuses
    themselves (seats not listed are AVAILABLE). Statuses are as the seat map would
    show them now: a lapsed hold is AVAILABLE."""
    only = request.query.get("show")
    wanted = None if only is None else ids.show_id(only)
    catalog = request.app[catalog_key]
    at = now_ms()
    shows = []
    for show_id, entry in request.app[seatmaps_key].cache.entries():
        if wanted is not None and show_id != wanted:
            continue
        statuses = entry.state.statuses(at)
        shown: dict[str, Any] = {
            "show_id": show_id, "region": catalog.region_of_show(show_id),
            "generation": entry.state.version >> keys.GENERATION_SHIFT,
            "version": entry.state.version,
            "as_of": datetime.fromtimestamp(entry.verified_at, UTC).isoformat(),
            "digest": digest(statuses)}
        if wanted is not None:
            shown["seats"] = statuses
        shows.append(shown)
    settings = request.app[settings_key]
    return answer({"node": settings.name, "region": settings.region, "at_ms": at,
                              "shows": shows})


@access.operator
async def cluster_overview(request: web.Request, caller: Identity) -> web.Response:
    """Every region's processes, store roles and replication lag, queues, the epoch and
    the last audit, probed now from this node (`overview.py`)."""
    connections = request.app[connections_key]  # the epoch the node routes by now
    return answer(await overview.overview(
        connections.topology, request.app[settings_key].name, connections))


def epoch_of(body: Any) -> int:
    if not isinstance(body, dict) or not isinstance(body.get("epoch"), int) \
            or isinstance(body["epoch"], bool) or not 1 <= body["epoch"] < 2**31:
        raise InvalidInput("body must be {\"epoch\": a positive integer}", field="epoch")
    return int(body["epoch"])


@access.operator
async def adopt_topology(request: web.Request, caller: Identity) -> web.Response:
    """Route by this topology epoch from now on, as applied to this region's store
    (`bookcluster topology apply`, `topology move`; an older one when an apply rolls
    back). 409 `topology_refused` if this node cannot take it; nothing changed then."""
    epoch = epoch_of(await json_body(request))
    topology = await request.app[swap_key].adopt(epoch)
    settings = request.app[settings_key]
    return answer({"node": settings.name, "region": settings.region,
                              "epoch": topology.epoch})
