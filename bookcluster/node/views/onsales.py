"""On-sale routes: the operator opens one, anyone lists them, a user joins the queue
and polls their position (`bookcluster/booking/onsales.py`).

Joining is a home write (forwarded to the on-sale's home region, within the write
rate limits per user and address); a position is answered from this region's replica
of the home master (reads stay home), polled or pushed over a WebSocket
(`bookcluster/booking/queue_live.py`).
"""

from __future__ import annotations

from aiohttp import web

from bookcluster.booking.onsales import onsale_id
from bookcluster.booking.passes import TICKET_HEADER
from bookcluster.node import access
from bookcluster.node.auth import Identity
from bookcluster.node.body import json_body
from bookcluster.node.typedefs import bookings_key, metrics_key, queue_hub_key
from bookcluster.node.views.booking import answer
from bookcluster.topology.errors import RegionUnavailable

MAX_MESSAGE_BYTES = 1024  # clients send nothing


async def _onsale_region(request: web.Request) -> str:
    return await request.app[bookings_key].onsales.region_of(
        onsale_id(request.match_info["onsale_id"]))


@access.operator
async def create_onsale(request: web.Request, caller: Identity) -> web.Response:
    return answer(await request.app[bookings_key].onsales.create(await json_body(request)),
                  status=201)


@access.public
async def list_onsales(request: web.Request) -> web.Response:
    return answer(await request.app[bookings_key].onsales.list())


@access.home_write(_onsale_region)
async def join_onsale(request: web.Request, caller: Identity) -> web.Response:
    return answer(await request.app[bookings_key].onsales.join(
        onsale_id(request.match_info["onsale_id"]), caller.user))


@access.user
async def onsale_position(request: web.Request, caller: Identity) -> web.Response:
    token = request.headers.get(TICKET_HEADER) or request.query.get("ticket")
    return answer(await request.app[bookings_key].onsales.position(
        onsale_id(request.match_info["onsale_id"]), caller.user, token))


@access.public
async def onsale_live(request: web.Request) -> web.WebSocketResponse:
    """The caller's position, then a message each time the queue moves. The queue ticket
    (`?ticket=`: a browser's WebSocket sends no headers) says who the caller is."""
    onsales = request.app[bookings_key].onsales
    onsale = onsale_id(request.match_info["onsale_id"])
    ticket = onsales.ticket(onsale, request.query.get("ticket"))
    await onsales.region_of(onsale)  # an unknown on-sale is a 404, not a socket
    hub, gauge = request.app[queue_hub_key], request.app[metrics_key].queue_sockets
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    gauge.inc()
    sock = None
    try:
        sock = await hub.join(onsale, ticket, ws)
        async for _ in ws:  # nothing to answer: the client only listens
            pass
    except RegionUnavailable:  # the replica is down: the page polls instead
        await ws.close(code=1011, message=b"region unavailable")
    finally:
        if sock is not None:
            await hub.leave(sock)
        gauge.dec()
    return ws
