"""Health, readiness and metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from bookcluster.node.answers import answer
from bookcluster.node.typedefs import (
    connections_key,
    listener_key,
    metrics_key,
    settings_key,
    swap_key,
)

READY_TIMEOUT_S = 1.0


async def healthz(request: web.Request) -> web.Response:
    settings = request.app[settings_key]
    return answer({"status": "ok", "node": settings.name, "region": settings.region,
                              "epoch": request.app[swap_key].topology.epoch})


async def readyz(request: web.Request) -> web.Response:
    """Ready when this region's Redis master and PostgreSQL primary answer and the
    subscription to every region's seat changes is up (or down for under 2 s)."""
    connections = request.app[connections_key]
    region = request.app[settings_key].region
    checks: dict[str, Any] = {}

    async def redis_ok() -> None:
        await connections.redis_master(region).ping()

    async def pg_ok() -> None:
        async with connections.pg_primary(region).acquire(timeout=READY_TIMEOUT_S) as conn:
            await conn.fetchval("SELECT 1")

    for name, check in (("redis", redis_ok), ("postgres", pg_ok)):
        try:
            await asyncio.wait_for(check(), READY_TIMEOUT_S)
            checks[name] = "ok"
        except Exception as exc:  # any failure means not ready; say which
            checks[name] = f"{type(exc).__name__}: {exc}".strip()
    # In memory, no I/O: cheap enough for every poll.
    checks["listener"], listeners = request.app[listener_key].readiness()
    ready = checks["redis"] == checks["postgres"] == "ok" and \
        all(v == "ok" for v in checks["listener"].values())
    return answer({"ready": ready, "region": region, "checks": checks,
                              "listeners": listeners}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[metrics_key].render()
    return web.Response(body=body, content_type="text/plain", charset="utf-8",
                        headers={"X-Prometheus-Format": "0.0.4"})
