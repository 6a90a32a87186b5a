"""Cross-origin calls from the cluster's own pages: the booking page, served by any
node, sends its writes straight to a node of the show's home region
(`X-Bookcluster-Home-Nodes`), which is another origin.

Only the cluster's nodes (every `http://host:port` of the topology in force) are
allowed origins; any other origin gets no CORS headers, so a browser keeps its
scripts from reading our answers, as before. Nothing about authentication changes:
the page sends its bearer token in the Authorization header (no cookies, no
credentials mode), and every route checks it as for any other caller.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from bookcluster.node.forward import REPLAYED_HEADER
from bookcluster.node.middlewares import HOME_NODES_HEADER, HOME_REGION_HEADER
from bookcluster.node.typedefs import connections_key
from bookcluster.topology.model import Topology

ALLOW_METHODS = "GET, POST"
ALLOW_HEADERS = ("Authorization, Content-Type, Idempotency-Key, X-Bookcluster-Admission, "
                 "X-Bookcluster-Queue-Ticket")
EXPOSE_HEADERS = ", ".join(("Retry-After", HOME_REGION_HEADER, HOME_NODES_HEADER,
                            REPLAYED_HEADER))
PREFLIGHT_MAX_AGE_S = 600

_origins: tuple[Topology | None, frozenset[str]] = (None, frozenset())


def node_origins(topology: Topology) -> frozenset[str]:
    """Every node's origin in `topology` (computed once per topology)."""
    global _origins
    if _origins[0] is not topology:
        _origins = (topology, frozenset(
            f"http://{node.host}:{node.port}"
            for name in topology.regions for node in topology.region(name).nodes))
    return _origins[1]


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    origin = request.headers.get("Origin")
    if origin is None or origin not in node_origins(request.app[connections_key].topology):
        return await handler(request)
    headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return web.Response(status=204, headers={
            **headers, "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S)})
    response = await handler(request)
    if not response.prepared:
        response.headers.update(headers)
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    return response
