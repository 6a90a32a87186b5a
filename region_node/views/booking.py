"""Booking write path: hold, confirm, cancel, extend, and booking reads."""

from __future__ import annotations

from aiohttp import web

from region_node import ids
from region_node.body import json_body
from region_node.confirm import ConfirmService
from region_node.errors import BookingNotPending, TicketNotReady
from region_node.jobs.tickets import ticket_path
from region_node.typedefs import bookings_key, catalog_key, forwarder_key, settings_key

confirm_key: web.AppKey[ConfirmService] = web.AppKey("confirm")


async def _home_region_of_booking(request: web.Request) -> str:
    return (await request.app[bookings_key].show_of_booking(
        request.match_info["booking_id"])).region


async def hold(request: web.Request) -> web.Response:
    show = await request.app[catalog_key].show(ids.show_id(request.match_info["show_id"]))
    forwarder = request.app[forwarder_key]
    if forwarder.needed(request, show.region):
        return await forwarder.forward(request, show.region)
    body = await json_body(request)
    result = await request.app[bookings_key].hold(show, body)
    return web.json_response(result, status=201)


async def confirm(request: web.Request) -> web.Response:
    booking_id = request.match_info["booking_id"]
    home = await _home_region_of_booking(request)
    forwarder = request.app[forwarder_key]
    if forwarder.needed(request, home):
        return await forwarder.forward(request, home)
    body = await json_body(request)
    stored = await request.app[confirm_key].confirm(
        booking_id, request.headers.get("Idempotency-Key"), body)
    # The stored text, byte for byte: a retry sees exactly the first answer.
    return web.Response(text=stored.body, status=stored.status, content_type="application/json")


async def cancel(request: web.Request) -> web.Response:
    home = await _home_region_of_booking(request)
    if request.app[forwarder_key].needed(request, home):
        return await request.app[forwarder_key].forward(request, home)
    return web.json_response(await request.app[bookings_key].cancel(
        request.match_info["booking_id"]))


async def extend(request: web.Request) -> web.Response:
    home = await _home_region_of_booking(request)
    if request.app[forwarder_key].needed(request, home):
        return await request.app[forwarder_key].forward(request, home)
    return web.json_response(await request.app[bookings_key].extend(
        request.match_info["booking_id"]))


async def get_booking(request: web.Request) -> web.Response:
    return web.json_response(await request.app[bookings_key].get(
        request.match_info["booking_id"]))


async def user_bookings(request: web.Request) -> web.Response:
    return web.json_response(await request.app[bookings_key].list_for_user(
        request.match_info["user_id"]))


async def ticket(request: web.Request) -> web.StreamResponse:
    """The ticket PNG once the region's worker has made it."""
    booking_id = request.match_info["booking_id"]
    bookings = request.app[bookings_key]
    booking = await bookings.get(booking_id)
    if booking["status"] != "CONFIRMED":
        raise BookingNotPending(booking_id, booking["status"])
    path = ticket_path(request.app[settings_key].topology.settings.run_dir,
                       booking["region"], booking_id)
    if not path.exists():
        raise TicketNotReady("the ticket is not ready yet; retry in a moment")
    return web.FileResponse(path, headers={"Content-Type": "image/png"})
