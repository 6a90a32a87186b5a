"""Health, readiness and metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web

from region_node.typedefs import connections_key, metrics_key, settings_key

READY_TIMEOUT_S = 1.0


async def healthz(request: web.Request) -> web.Response:
    settings = request.app[settings_key]
    return web.json_response({"status": "ok", "node": settings.name, "region": settings.region})


async def readyz(request: web.Request) -> web.Response:
    """Ready when this region's Redis master and PostgreSQL primary answer."""
    connections = request.app[connections_key]
    region = request.app[settings_key].region
    checks = {}

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
    ready = all(v == "ok" for v in checks.values())
    return web.json_response({"ready": ready, "region": region, "checks": checks},
                             status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[metrics_key].render()
    return web.Response(body=body, content_type="text/plain", charset="utf-8",
                        headers={"X-Prometheus-Format": "0.0.4"})
