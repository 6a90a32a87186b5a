"""`GET /openapi.json`: the API's contract (`openapi.py`), rendered once per node."""

from __future__ import annotations

from aiohttp import web

from bookcluster.node import access
from bookcluster.node.typedefs import openapi_key


@access.public
async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=request.app[openapi_key], content_type="application/json")
