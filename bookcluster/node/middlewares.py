"""The one place where errors become HTTP responses, and where requests are measured."""

from __future__ import annotations

import logging
import time
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from bookcluster import tracing
from bookcluster.booking import ids
from bookcluster.errors import MalformedId, NodeError
from bookcluster.node import requestlog
from bookcluster.node.answers import answer
from bookcluster.node.forward import MOVED_STATUS
from bookcluster.node.typedefs import (
    access_log_key,
    catalog_key,
    connections_key,
    forwarder_key,
    metrics_key,
    show_key,
)
from bookcluster.topology.errors import Moved, RegionUnavailable

log = logging.getLogger(__name__)

HOME_REGION_HEADER = "X-Bookcluster-Home-Region"
HOME_NODES_HEADER = "X-Bookcluster-Home-Nodes"  # space-separated base URLs
# The answering node's own region, next to those two: a page served by a node of the
# home region (listed in the topology or not) sends its writes to that node.
NODE_REGION_HEADER = "X-Bookcluster-Node-Region"

OUTCOME_WORDS = {
    "not_applied": "nothing was changed, retry later",
    "unknown": "the write may still take effect: retry with the same Idempotency-Key "
               "to learn its outcome",
}


def _route(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return "unmatched"  # never label metrics by raw path: unbounded cardinality
    return info.route.resource.canonical


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request measured, traced when tracing is on (`tracing.py`), and written to
    the access log when that is on."""
    started = time.perf_counter()
    status = 500
    response: web.StreamResponse | None = None
    route = _route(request)
    metrics = request.app[metrics_key]
    with tracing.server_span(f"{request.method} {route}", request.headers, {
            "http.request.method": request.method, "http.route": route,
            "bookcluster.region": metrics.region}) as span:
        if span is not None:  # the access log's trace id is the trace's
            request[requestlog.TRACE] = tracing.trace_id(span) or requestlog.trace_id(request)
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            seconds = time.perf_counter() - started
            metrics.observe_request(route, request.method, status, seconds)
            access_log = request.app[access_log_key]
            if access_log.on or span is not None:
                _record(request, route, status, seconds, metrics.region, response, span,
                        access_log)


def _record(request: web.Request, route: str, status: int, seconds: float, region: str,
            response: web.StreamResponse | None, span: object,
            access_log: requestlog.AccessLog) -> None:
    home = response.headers.get(HOME_REGION_HEADER) if response is not None else None
    forwarder = request.app.get(forwarder_key)
    forwarded_in = forwarder is not None and forwarder.forwarded(request)
    line = requestlog.entry(request, route, status, seconds, region, home, forwarded_in,
                            response)
    tracing.annotate(span, {"http.response.status_code": status,
                            "bookcluster.home": line["home"],
                            "bookcluster.forwarded": line["forwarded"],
                            "bookcluster.booking_id": line["booking_id"],
                            "bookcluster.show_id": request.match_info.get("show_id")})
    if access_log.on:
        access_log.write(line)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except NodeError as exc:
        return answer(exc.body(), status=exc.status, headers=exc.headers)
    except RegionUnavailable as exc:
        return answer(_unavailable_body(exc), status=503,
                                 headers={"Retry-After": str(exc.RETRY_AFTER_S)})
    except Moved as exc:
        # A forwarding node routes the write again (`access.py`); a client sees it only
        # if this node's region store has no newer epoch either.
        return answer(
            {"error": "moved", "region": exc.region, "epoch": exc.epoch,
             "outcome": "not_applied", "retry_after_s": exc.RETRY_AFTER_S,
             "message": "this theatre is not this region's to write at the node's topology "
                        f"epoch ({exc}); nothing was changed, retry shortly"},
            status=MOVED_STATUS, headers={"Retry-After": str(exc.RETRY_AFTER_S)})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # 413: aiohttp's own `client_max_size` check, for a body read outside `body.py`.
        code = {404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
                413: "body_too_large"}.get(exc.status, "http_error")
        return answer({"error": code, "message": exc.reason}, status=exc.status)
    except Exception:
        error_id = uuid.uuid4().hex[:12]
        log.exception("unhandled error %s on %s %s", error_id, request.method, request.path)
        return answer(
            {"error": "internal", "message": "internal error", "error_id": error_id},
            status=500)


def _unavailable_body(exc: RegionUnavailable) -> dict[str, str | int]:
    """A 503 says what the caller can rely on (`RegionUnavailable.outcome`)."""
    words = OUTCOME_WORDS[exc.outcome]
    if "lapses_by" in exc.known:
        words += f"; a hold made by it lapses by {exc.known['lapses_by']}"
    return {"error": "region_unavailable", "region": exc.region, "outcome": exc.outcome,
            **exc.known, "retry_after_s": exc.RETRY_AFTER_S,
            "message": f"home region {exc.region} cannot take writes now ({exc.component}); "
                       f"{words}"}


@web.middleware
async def home_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer about a theatre, show or booking names its home region and that
    region's nodes, so a client sends its next write there directly (no forward)."""
    response = await handler(request)
    if response.prepared:  # a live socket or a streamed file: headers are gone
        return response
    region = _home_of(request)
    if region is not None:
        nodes = request.app[connections_key].topology.region(region).nodes
        response.headers[HOME_REGION_HEADER] = region
        response.headers[HOME_NODES_HEADER] = " ".join(
            f"http://{node.host}:{node.port}" for node in nodes)
        response.headers[NODE_REGION_HEADER] = request.app[connections_key].local_region
    return response


def _home_of(request: web.Request) -> str | None:
    """The home region named by the route's ids, from local data only (or None)."""
    info = request.match_info
    try:
        if "theatre_id" in info:
            return request.app[catalog_key].placement.region_of(
                ids.theatre_id(info["theatre_id"]))
        if "show_id" in info:
            known = request[show_key] if show_key in request else None  # by the route
            if known is not None and known[0] is request.app[catalog_key].placement:
                return known[1].region
            return request.app[catalog_key].region_of_show(ids.show_id(info["show_id"]))
        if "booking_id" in info:
            return request.app[catalog_key].region_of_show(ids.booking_show(info["booking_id"]))
    except MalformedId:
        return None
    return None
