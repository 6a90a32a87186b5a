"""Booking routes: hold, pay, confirm, cancel, extend, refund, and the caller's bookings.

Every route acts for the bearer of a verified token (`access.py`); writes run
in the show's home region, where ownership is checked in the same statement or
transaction that reads the booking.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from bookcluster.booking import ids
from bookcluster.booking.confirm import ConfirmService
from bookcluster.booking.models import (
    BestRequest,
    Confirmation,
    HoldRequest,
    PayRequest,
)
from bookcluster.booking.passes import ADMISSION_HEADER
from bookcluster.booking.pay import PaymentService
from bookcluster.booking.refunds import Refunds
from bookcluster.catalog import ShowInfo
from bookcluster.errors import Forbidden, InvalidInput, NotFound
from bookcluster.node import access
from bookcluster.node.answers import answer, stored_answer
from bookcluster.node.auth import OPERATOR, Identity
from bookcluster.node.body import json_body
from bookcluster.node.forward import REPLAYED_HEADER
from bookcluster.node.requestlog import BOOKING_HEADER
from bookcluster.node.typedefs import (
    bookings_key,
    catalog_key,
    refusal_key,
    settings_key,
    show_key,
)

confirm_key: web.AppKey[ConfirmService] = web.AppKey("confirm")
pay_key: web.AppKey[PaymentService] = web.AppKey("pay")
refunds_key: web.AppKey[Refunds] = web.AppKey("refunds")
# A hold's body, parsed and validated once per request (its turn and its view both ask),
# or why it is invalid.
HOLD_BODY: web.RequestKey[HoldRequest | InvalidInput] = web.RequestKey("hold_body")


async def show_of(request: web.Request) -> ShowInfo:
    """The route's show, looked up once per request (again only if the node adopted a
    newer topology epoch since: a MOVED write is routed anew)."""
    catalog = request.app[catalog_key]
    if show_key in request and request[show_key][0] is catalog.placement:
        return request[show_key][1]
    show = await catalog.show(ids.show_id(request.match_info["show_id"]))
    request[show_key] = (catalog.placement, show)
    return show


async def _show_region(request: web.Request) -> str:
    return (await show_of(request)).region


async def _booking_region(request: web.Request) -> str:
    return (await request.app[bookings_key].show_of_booking(
        request.match_info["booking_id"])).region


async def _hold_body(request: web.Request, caller: Identity) -> HoldRequest:
    """The hold's body as its model (parsed and validated on the first call)."""
    if HOLD_BODY not in request:
        cap = request.app[settings_key].topology.settings.max_seats_per_booking
        try:
            request[HOLD_BODY] = HoldRequest.parse(await json_body(request), cap, caller.user)
        except InvalidInput as exc:
            request[HOLD_BODY] = exc
    parsed = request[HOLD_BODY]
    if isinstance(parsed, InvalidInput):
        raise InvalidInput(parsed.message, **parsed.details)
    return parsed


@contextlib.asynccontextmanager
async def _hold_turn(request: web.Request, caller: Identity) -> AsyncIterator[None]:
    """A hold waits for this node's hold of the same seats, and is refused (409) if the
    home master then, or when the seat cache suggests it, shows them taken
    (`refusals.py`). Keyed holds and bodies the hold refuses as invalid go on at once."""
    body = None
    if "Idempotency-Key" not in request.headers:
        with contextlib.suppress(InvalidInput):
            body = await _hold_body(request, caller)
    if body is None:
        yield
        return
    show = await show_of(request)
    async with request.app[refusal_key].turn(show, body.seat_ids,
                                             access.client_address(request)):
        yield


@access.home_write(_show_region, redis_bound=True, lease=True, turn=_hold_turn,
                   tokens_in_view=True)
async def hold(request: web.Request, caller: Identity) -> web.Response:
    result, replayed = await request.app[bookings_key].hold(
        await show_of(request), await _hold_body(request, caller), caller.user,
        request.headers.get("Idempotency-Key"), access.client_address(request),
        access.write_tokens(request), admission=request.headers.get(ADMISSION_HEADER))
    return _held(result, replayed)


@access.home_write(_show_region, redis_bound=True, lease=True, tokens_in_view=True)
async def best(request: web.Request, caller: Identity) -> web.Response:
    """Best available: the home master chooses and holds (`seats/best.py`)."""
    cap = request.app[settings_key].topology.settings.max_seats_per_booking
    body = BestRequest.parse(await json_body(request), cap)
    result, replayed = await request.app[bookings_key].best(
        await show_of(request), body, caller.user, request.headers.get("Idempotency-Key"),
        access.client_address(request), access.write_tokens(request),
        admission=request.headers.get(ADMISSION_HEADER))
    return _held(result, replayed)


def _held(result: dict[str, Any], replayed: bool) -> web.Response:
    """A hold's 201, naming its booking in a header too (for the access log; a forward
    passes it back)."""
    headers = {BOOKING_HEADER: str(result["booking_id"])}
    if replayed:
        headers[REPLAYED_HEADER] = "true"
    return answer(result, status=201, headers=headers)


def _require_payments(request: web.Request) -> None:
    if pay_key not in request.app:
        raise NotFound("payments are not configured in this topology")


@access.home_write(_booking_region)
async def pay(request: web.Request, caller: Identity) -> web.Response:
    _require_payments(request)
    return_url = PayRequest.parse(await json_body(request), request.app[settings_key].topology)
    return answer(await request.app[pay_key].pay(
        request.match_info["booking_id"], caller.user, return_url), status=201)


@access.home_write(_booking_region)
async def confirm(request: web.Request, caller: Identity) -> web.Response:
    _require_payments(request)
    booking_id = request.match_info["booking_id"]
    stored = await request.app[confirm_key].confirm(booking_id, caller.user, Confirmation.parse(
        booking_id, request.headers.get("Idempotency-Key"), await json_body(request)))
    # The stored text, byte for byte: a retry sees exactly the first answer.
    return stored_answer(stored.body, stored.status)


@access.home_write(_booking_region)
async def cancel(request: web.Request, caller: Identity) -> web.Response:
    return answer(await request.app[bookings_key].cancel(
        request.match_info["booking_id"], caller.user))


@access.home_write(_booking_region)
async def refund(request: web.Request, caller: Identity) -> web.Response:
    """A confirmed booking's refund before entry (`booking/refunds.py`): its owner's, or
    an operator's of any booking. Asked again, the same answer (`Idempotent-Replayed`),
    with or without its `Idempotency-Key` (checked, like a hold's)."""
    if "Idempotency-Key" in request.headers:
        ids.idempotency_key(request.headers["Idempotency-Key"])
    body, replayed = await request.app[refunds_key].refund(
        request.match_info["booking_id"], caller.user, OPERATOR in caller.roles)
    headers = {REPLAYED_HEADER: "true"} if replayed else None
    return web.Response(text=body, headers=headers, content_type="application/json")


@access.home_write(_booking_region)
async def extend(request: web.Request, caller: Identity) -> web.Response:
    return answer(await request.app[bookings_key].extend(
        request.match_info["booking_id"], caller.user))


@access.user
async def get_booking(request: web.Request, caller: Identity) -> web.Response:
    return answer(await request.app[bookings_key].get(
        request.match_info["booking_id"], caller.user))


@access.user
async def user_bookings(request: web.Request, caller: Identity) -> web.Response:
    if request.match_info["user_id"] != caller.user:
        raise Forbidden("a user's bookings are listed only for that user (see /me/bookings)")
    return answer(await request.app[bookings_key].list_for_user(caller.user))


@access.user
async def my_bookings(request: web.Request, caller: Identity) -> web.Response:
    return answer(await request.app[bookings_key].list_for_user(caller.user))


@access.user
async def ticket(request: web.Request, caller: Identity) -> web.StreamResponse:
    """The ticket PNG, drawn on its first download and stored (`booking/tickets.py`)."""
    booking_id = request.match_info["booking_id"]
    bookings = request.app[bookings_key]
    show = await bookings.show_of_booking(booking_id)
    image = await bookings.tickets.png(show, booking_id, caller.user)
    return web.Response(body=image, content_type="image/png")
