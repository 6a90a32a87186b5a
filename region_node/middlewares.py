"""The one place where errors become HTTP responses, and where requests are measured."""

from __future__ import annotations

import logging
import time
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from region_node.errors import NodeError
from region_node.typedefs import metrics_key
from router.errors import RegionUnavailable

log = logging.getLogger(__name__)


def _route(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return "unmatched"  # never label metrics by raw path: unbounded cardinality
    return info.route.resource.canonical


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        request.app[metrics_key].observe_request(
            _route(request), request.method, status, time.perf_counter() - started)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except NodeError as exc:
        return web.json_response(exc.body(), status=exc.status, headers=exc.headers)
    except RegionUnavailable as exc:
        return web.json_response(
            {"error": "region_unavailable", "region": exc.region,
             "retry_after_s": exc.RETRY_AFTER_S,
             "message": f"home region {exc.region} cannot take writes now ({exc.component}); "
                        "nothing was changed, retry later"},
            status=503, headers={"Retry-After": str(exc.RETRY_AFTER_S)})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # 413: aiohttp's own `client_max_size` check, for a body read outside `body.py`.
        code = {404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
                413: "body_too_large"}.get(exc.status, "http_error")
        return web.json_response({"error": code, "message": exc.reason}, status=exc.status)
    except Exception:
        error_id = uuid.uuid4().hex[:12]
        log.exception("unhandled error %s on %s %s", error_id, request.method, request.path)
        return web.json_response(
            {"error": "internal", "message": "internal error", "error_id": error_id},
            status=500)
