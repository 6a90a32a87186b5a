"""`POST /payments/webhook`: the gateway tells us a payment was captured or failed.

Verified (HMAC over timestamp and body, replay window), stored once by event
id in the booking's home region together with an outbox job, answered at
once; the saga runs in that region's worker (`jobs/payments.py`). An event
naming a show we do not know, or a booking id not of our making (so no home
region), is stored all the same, in this node's region, whose worker refunds
it: a signed capture is never refused for what it names, or its money would
stay captured.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from bookcluster.booking.confirm import PAYMENT_ID
from bookcluster.booking.outbox import enqueue
from bookcluster.booking.signing import SIGNATURE_HEADER, SignatureError, verify_webhook
from bookcluster.catalog import ShowInfo
from bookcluster.errors import InvalidInput, MalformedId, NotFound, RequestError
from bookcluster.node.body import parse_json, read_body
from bookcluster.node.typedefs import bookings_key, settings_key

EVENT_KINDS = ("payment.captured", "payment.failed")
GATEWAY_ID = PAYMENT_ID  # the gateway's ids (payments, events) share one alphabet
MAX_PAISE = 2**31 - 1  # amount columns are `integer`
# payment_event_by_show indexes this prefix's number as a `bigint`.
SHOW_PREFIX = re.compile(r"^b([0-9]+)-")
MAX_SHOW_DIGITS = 18


class WebhookRejected(RequestError):
    """Signature problems: 400 for a malformed or stale header, 401 for a wrong one."""

    def __init__(self, exc: SignatureError) -> None:
        super().__init__(str(exc))
        self.code = exc.code
        self.status = 401 if exc.code == "bad_signature" else 400


def parse_event(body: bytes) -> dict[str, Any]:
    event = parse_json(body)
    fields = {"event_id": str, "kind": str, "payment_id": str, "booking_id": str,
              "amount_paise": int}
    if not isinstance(event, dict) or any(not isinstance(event.get(k), t)
                                          for k, t in fields.items()):
        raise InvalidInput("webhook needs event_id, kind, payment_id, booking_id (strings) "
                           "and amount_paise (integer)")
    if event["kind"] not in EVENT_KINDS:
        raise InvalidInput(f"unknown event kind {event['kind']!r}", field="kind")
    # Signed or not, what PostgreSQL cannot store must be a 422, not a 500.
    for name in ("event_id", "payment_id"):
        if not GATEWAY_ID.fullmatch(event[name]):
            raise InvalidInput(f"{name} must be 1-128 of [A-Za-z0-9_-]", field=name)
    if isinstance(event["amount_paise"], bool) or not 0 <= event["amount_paise"] <= MAX_PAISE:
        raise InvalidInput(f"amount_paise must be 0..{MAX_PAISE}", field="amount_paise")
    # Any booking id the gateway signs is stored (one we cannot route is refunded), as
    # long as PostgreSQL can hold and index it.
    prefix = SHOW_PREFIX.match(event["booking_id"])
    if not GATEWAY_ID.fullmatch(event["booking_id"]) \
            or (prefix is not None and len(prefix.group(1)) > MAX_SHOW_DIGITS):
        raise InvalidInput("booking_id must be 1-128 of [A-Za-z0-9_-]", field="booking_id")
    return {k: event[k] for k in fields}


async def webhook(request: web.Request) -> web.Response:
    payments = request.app[settings_key].topology.payments
    if payments is None:
        raise NotFound("payments are not configured in this topology")
    body = await read_body(request)
    try:
        verify_webhook(request.app[settings_key].topology.secrets.get("webhook_secret"),
                       request.headers.get(SIGNATURE_HEADER), body,
                       payments.replay_window_s)
    except SignatureError as exc:
        raise WebhookRejected(exc) from None
    event = parse_event(body)
    bookings = request.app[bookings_key]
    try:
        show: ShowInfo | None = await bookings.show_of_booking(event["booking_id"])
    except (NotFound, MalformedId):
        show = None
    region = request.app[settings_key].region if show is None else show.region
    store = bookings.home.transaction(region) if show is None \
        else bookings.home.write(show.region, show.id)
    async with store as conn:
        stored = await conn.fetchval(
            "INSERT INTO payment_event (event_id, kind, payment_id, booking_id, amount_paise) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING RETURNING true",
            event["event_id"], event["kind"], event["payment_id"], event["booking_id"],
            event["amount_paise"])
        if stored:
            await enqueue(conn, "payment_event", event)
    return web.json_response({"received": True, "duplicate": not stored,
                              "event_id": event["event_id"], "region": region})
