"""On-sale routes: the operator opens one, anyone lists them, a user joins the queue
and polls their position (`bookcluster/booking/onsales.py`).

Joining is a home write (forwarded to the on-sale's home region, within the write
rate limits per user and address); a position is answered from this region's replica
of the home master (reads stay home).
"""

from __future__ import annotations

from aiohttp import web

from bookcluster.booking.onsales import onsale_id
from bookcluster.booking.passes import TICKET_HEADER
from bookcluster.node import access
from bookcluster.node.answers import answer
from bookcluster.node.auth import Identity
from bookcluster.node.body import json_body
from bookcluster.node.typedefs import bookings_key


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
