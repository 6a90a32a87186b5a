"""The late-payment saga (seed 003) and refunds.

A verified webhook event is stored once (by event id) and processed here, in
the booking's home region:
- captured, hold still ours      -> the same fenced sale as the confirm endpoint;
- captured, seats sold elsewhere -> booking EXPIRED, payment REFUND_PENDING,
                                    a refund job and a message to the user;
- captured, not the booking's exact amount
                                 -> this payment is refunded, never sold; the
                                    booking stays held for a correct payment;
- captured, booking already paid with another payment, cancelled or expired
                                 -> this payment is refunded;
- captured, a booking id of a known show that we never issued
                                 -> refunded (no payment row: it would need the booking);
- captured, a show we do not know or a booking id not of our making (no home
  region: the event was stored in the region that received it, whose worker runs this)
                                 -> refunded;
- captured, but the gateway says the payment is another booking's (or has no
  such payment)                  -> ignored: nothing sold, nothing refunded (that
                                    payment's own event settles it);
- failed                         -> booking CANCELLED, seats released.
Money is conserved: each captured payment ends as the booking's payment or
as a refund, never both, decided in one transaction with the booking row locked.
A captured event is first checked against the gateway's own record of the
payment (whose booking, how much), so a refund only ever returns a payment of
the booking it names, and one payment never sells two bookings.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from bookcluster.booking import ledger
from bookcluster.booking.confirm import sell
from bookcluster.booking.gateway import GatewayClient, Intent
from bookcluster.booking.holds import released
from bookcluster.catalog import ShowInfo
from bookcluster.errors import BookingError, MalformedId, NotFound, PaymentRequired
from bookcluster.seats import mirror
from bookcluster.worker.jobs.context import JobContext

log = logging.getLogger(__name__)


async def process_event(ctx: JobContext, data: dict[str, Any]) -> str:
    booking_id = data["booking_id"]
    try:
        show: ShowInfo | None = await ctx.bookings.show_of_booking(booking_id)
    except (NotFound, MalformedId):  # no home region: the event was stored in ours
        show = None
    if data["kind"] == "payment.captured":
        # GatewayUnavailable fails the job: the queue retries it with backoff.
        intent = await GatewayClient(ctx.topology, ctx.http).intent(data["payment_id"])
        refused = _not_this_bookings(intent, data)
        if refused is not None:
            log.warning("payment event %s ignored: %s", data["event_id"], refused)
            return await _mark(ctx, show, data["event_id"], f"ignored: {refused}")
        assert intent is not None
        data = {**data, "amount_paise": intent.amount_paise}  # the gateway's word
    if show is None:
        return await _refund_unroutable(ctx, data)
    sold: list[str] = []
    freed: list[tuple[str, int, str]] = []
    # The booking's home now: the event may have been queued before its theatre moved.
    async with ctx.home.write(show.region, show.id) as conn:
        event = await conn.fetchrow(
            "SELECT processed_at, outcome FROM payment_event WHERE event_id = $1 FOR UPDATE",
            data["event_id"])
        if event is not None and event["processed_at"] is not None:
            return f"duplicate: {event['outcome']}"
        if data["kind"] == "payment.captured":
            outcome, sold, freed = await _captured(conn, show, data)
        else:
            outcome, freed = await _failed(conn, data)
        await conn.execute(
            "UPDATE payment_event SET processed_at = now(), outcome = $2 WHERE event_id = $1",
            data["event_id"], outcome)
    if event is None and ctx.region != show.region:
        # Stored here while this region did not know the show; settled at its home now.
        await _mark(ctx, None, data["event_id"], outcome)
    changes = released(freed)
    if sold:
        changes[("book", show.id, booking_id)] = sold
    await mirror.apply_now(ctx.home, show.region, changes)
    return outcome


def _not_this_bookings(intent: Intent | None, data: dict[str, Any]) -> str | None:
    """Why a captured event must neither sell nor refund, or None when the gateway's
    record says it is a captured payment of the booking it names."""
    payment_id = data["payment_id"]
    if intent is None:
        return f"the gateway has no payment {payment_id}"
    if intent.booking_id != data["booking_id"]:
        return (f"payment {payment_id} is booking {intent.booking_id}'s at the gateway, "
                f"not {data['booking_id']}'s")
    if intent.status != "CAPTURED":
        return f"payment {payment_id} is {intent.status} at the gateway"
    return None


async def _mark(ctx: JobContext, show: ShowInfo | None, event_id: str, outcome: str) -> str:
    """Record an event's outcome where it is stored: its show's home, or (a show this
    region did not know when the webhook came) this region."""
    regions = [] if show is None else [show.region]
    regions += [ctx.region] if ctx.region not in regions else []
    for region in regions:
        async with ctx.home.transaction(region) as conn:
            if await conn.fetchval(
                    "UPDATE payment_event SET processed_at = now(), outcome = $2 "
                    "WHERE event_id = $1 AND processed_at IS NULL RETURNING true",
                    event_id, outcome):
                break
    return outcome


async def _captured(conn: asyncpg.Connection, show: ShowInfo, data: dict[str, Any]
                    ) -> tuple[str, list[str], list[tuple[str, int, str]]]:
    booking_id, payment_id = data["booking_id"], data["payment_id"]
    booking = await conn.fetchrow(
        "SELECT status, payment_id FROM booking WHERE id = $1 FOR UPDATE", booking_id)
    if booking is None:
        await _start_refund(conn, data, "no such booking")
        return "refund: no booking", [], []
    if booking["status"] == "CONFIRMED" and booking["payment_id"] == payment_id:
        return "already confirmed", [], []
    if booking["status"] == "INITIATED":
        try:
            async with conn.transaction():  # savepoint: a refusal undoes any part-sale
                sold = await sell(conn, show, booking_id, payment_id, "CAPTURED",
                                  data["amount_paise"])
            return "confirmed", sold, []
        except PaymentRequired as exc:  # wrong amount: refund it, keep the hold
            await _start_refund(conn, data, "wrong amount")
            return f"refund: wrong amount ({exc.message})", [], []
        except BookingError as exc:
            freed = await ledger.expire(conn, [booking_id])
            await _start_refund(conn, data, exc.code)
            return f"refund: {exc.code}", [], freed
    await _start_refund(conn, data, f"booking {booking['status']}")
    return f"refund: booking {booking['status']}", [], []


async def _start_refund(conn: asyncpg.Connection, data: dict[str, Any], why: str) -> None:
    """A refund job in the same transaction. A payment row needs its booking (foreign
    key): for a booking id we never issued (of a known show) there is none to record,
    nobody to mail, and the money goes back all the same."""
    await ledger.refund_started(conn, data["booking_id"], data["payment_id"],
                                data["amount_paise"], why)


async def _failed(conn: asyncpg.Connection, data: dict[str, Any]
                  ) -> tuple[str, list[tuple[str, int, str]]]:
    failed = await ledger.payment_failed(conn, data["booking_id"], data["payment_id"],
                                         data["amount_paise"])
    if failed.prior is None:
        return "failed: no booking", []
    if failed.prior != "INITIATED":
        return f"failed: booking already {failed.prior}", []
    return "failed: seats released", failed.freed


async def _refund_unroutable(ctx: JobContext, data: dict[str, Any]) -> str:
    if data["kind"] != "payment.captured":
        return await _mark(ctx, None, data["event_id"], "ignored: no such show")
    await refund(ctx, data)
    return await _mark(ctx, None, data["event_id"], "refunded: no such show")


async def refund(ctx: JobContext, data: dict[str, Any]) -> str:
    """Ask the gateway to refund a payment (idempotent there per payment id), only if
    the gateway's record says it is a payment of the booking this refund is for."""
    gateway = GatewayClient(ctx.topology, ctx.http)
    # GatewayUnavailable fails the job: the queue retries it with backoff.
    intent = await gateway.intent(data["payment_id"])
    if intent is not None and intent.booking_id == data["booking_id"] \
            and intent.status == "REFUNDED":
        pass  # an earlier run got this far
    else:
        refused = _not_this_bookings(intent, data)
        if refused is not None:
            log.error("refund of %s for %s refused: %s", data["payment_id"],
                      data["booking_id"], refused)
            return f"not refunded: {refused}"
        assert intent is not None
        await gateway.refund(intent.payment_id, intent.amount_paise)
    try:
        show = await ctx.bookings.show_of_booking(data["booking_id"])
    except (NotFound, MalformedId):
        return "refunded"
    async with ctx.home.write(show.region, show.id) as conn:
        await ledger.refunded(conn, data["booking_id"], data["payment_id"])
    return "refunded"
