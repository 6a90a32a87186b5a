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

from aiohttp import web

from bookcluster.booking.models import PaymentEvent
from bookcluster.booking.outbox import enqueue
from bookcluster.booking.signing import SIGNATURE_HEADER, SignatureError, verify_webhook
from bookcluster.catalog import ShowInfo
from bookcluster.errors import MalformedId, NotFound, RequestError
from bookcluster.node.answers import answer
from bookcluster.node.body import parse_json, read_body
from bookcluster.node.typedefs import bookings_key, settings_key


class WebhookRejected(RequestError):
    """Signature problems: 400 for a malformed or stale header, 401 for a wrong one."""

    def __init__(self, exc: SignatureError) -> None:
        super().__init__(str(exc))
        self.code = exc.code
        self.status = 401 if exc.code == "bad_signature" else 400


def parse_event(body: bytes) -> PaymentEvent:
    return PaymentEvent.parse(parse_json(body))


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
        show: ShowInfo | None = await bookings.show_of_booking(event.booking_id)
    except (NotFound, MalformedId):
        show = None
    region = request.app[settings_key].region if show is None else show.region
    store = bookings.home.transaction(region) if show is None \
        else bookings.home.write(show.region, show.id)
    async with store as conn:
        stored = await conn.fetchval(
            "INSERT INTO payment_event (event_id, kind, payment_id, booking_id, amount_paise) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING RETURNING true",
            event.event_id, event.kind, event.payment_id, event.booking_id, event.amount_paise)
        if stored:
            await enqueue(conn, "payment_event", event.as_job())
    return answer({"received": True, "duplicate": not stored,
                              "event_id": event.event_id, "region": region})
