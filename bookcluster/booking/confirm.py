"""Confirm: the fenced, idempotent, deadlock-free sale of a held booking.

First the gateway is asked whether `payment_id` is CAPTURED for this booking
and its amount. Then one statement on the home primary (`bc_confirm`, one
round trip, its own transaction):
1. claims the Idempotency-Key for the booking's owner (another user's booking
   is 404). A duplicate arriving while the first runs blocks on the key's
   unique index until the first commits, then replays its stored response
   byte for byte — it never runs twice; a used key replays even if the gateway
   now says otherwise (refunded, or not answering);
2. if the payment was not captured (unknown, pending, failed, another
   booking's, another amount) the answer is 402 and the claim is undone:
   nothing changed, so the same request succeeds once the payment is captured;
3. sells (`bc_sell`): locks the booking row, then its seat rows in seat-id
   order; checks every seat still carries this booking's fencing token (seats
   whose hold was lost but that are AVAILABLE are re-taken under the same row
   locks, so a late confirm succeeds only when no one else could have the
   seats); marks seats BOOKED, booking_seat.sold (unique per seat: the last
   line of defence), the booking CONFIRMED, records the payment, the mirror
   rows and the outbox jobs;
4. stores the answer under the key, and commits only before the write's
   deadline (`deadline.py`);
5. answers 200 (a sale now, the webhook's, or a stored one replayed) only once
   the region's synchronous standby has flushed it (`replication.py`): a commit
   whose wait for the standby was cancelled is visible on the primary all the
   same, and would be lost in a failover. Until then it is 503 `unknown`.
Business refusals (409) are stored too (as their outcome, rendered the same
way on every replay), so retries get the same answer. If the payment's
webhook already sold the booking with this payment, the answer is 200.
After commit, Redis turns the holds into booked seats and publishes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from bookcluster.booking import ledger
from bookcluster.booking.gateway import GatewayClient, GatewayUnavailable
from bookcluster.booking.holds import BookingService
from bookcluster.booking.ledger import Outcome, Reason
from bookcluster.booking.models import Confirmation, encode_text
from bookcluster.catalog import ShowInfo
from bookcluster.errors import (
    BookingError,
    BookingNotPending,
    HoldExpired,
    IdempotencyKeyReused,
    NodeError,
    NotFound,
    PaymentRequired,
    PaymentReused,
    SeatsTaken,
)
from bookcluster.seats import mirror
from bookcluster.stores import deadline, replication
from bookcluster.topology.errors import RegionUnavailable

log = logging.getLogger(__name__)

# Kept back from the deadline when waiting for the standby, for the 503 to go out.
REPLICATION_MARGIN_S = 0.05


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: str  # JSON text, returned verbatim on every replay


class PaymentRaced(PaymentReused):
    """Two bookings raced to use one payment id; the losing transaction was aborted."""


class ConfirmService:
    def __init__(self, bookings: BookingService, gateway: GatewayClient) -> None:
        self.bookings = bookings
        self.gateway = gateway
        self.home = bookings.home
        self.metrics = bookings.metrics

    async def confirm(self, booking_id: str, owner: str,
                      request: Confirmation) -> StoredResponse:
        """Confirm a validated call (`Confirmation.parse`, for this `booking_id`)."""
        key, payment_id = request.key, request.payment_id
        show = await self.bookings.show_of_booking(booking_id)
        amount, not_captured = await self._captured_amount(booking_id, payment_id)
        due = datetime.fromtimestamp(deadline.current().at, UTC)
        try:
            async with self.home.connection(show.region, writes=True) as conn:
                row = await ledger.confirm(
                    conn, show=show.id, booking=booking_id, user=owner, key=key,
                    request_hash=request.request_hash, payment=payment_id,
                    amount=amount, region=show.region, deadline=due, epoch=self.home.epoch)
                if row.answer_status == 200:
                    await self._replicated(conn, show)
        except ledger.Undone as exc:  # rolled back: nothing changed, nothing stored
            raise self._undone(show, exc, not_captured) from None
        except asyncpg.UniqueViolationError:  # raced with another sale: nothing committed
            self._count(show, "conflict")
            raise SeatsTaken([]) from None
        return await self._answer(show, booking_id, row)

    async def _answer(self, show: ShowInfo, booking_id: str,
                      row: ledger.Confirmation) -> StoredResponse:
        outcome = row.outcome
        if outcome == Outcome.NOT_FOUND:
            raise NotFound(f"no booking {booking_id!r}", id=booking_id)
        if outcome == Outcome.KEY_REUSED:
            raise IdempotencyKeyReused("this Idempotency-Key was used with a different request")
        assert row.answer_status is not None and row.answer_body is not None
        stored = StoredResponse(row.answer_status, row.answer_body)
        if outcome == Outcome.REPLAY:
            self._count(show, "replayed")
        elif outcome == Outcome.SOLD:
            self._count(show, "confirmed")
            # Committed with its mirror rows: Redis learns it now, or from the worker.
            await mirror.apply_now(self.home, show.region,
                                   {("book", show.id, booking_id): row.detail})
        elif outcome != Outcome.SOLD_BEFORE:
            self._count(show, outcome.value)
        return self._with_ticket(show, booking_id, rendered(booking_id, stored))

    def _with_ticket(self, show: ShowInfo, booking_id: str,
                     stored: StoredResponse) -> StoredResponse:
        """A sale's answer with its signed ticket (`ticket.payload`, the QR's text): the
        same text on every replay, as Ed25519 signatures are deterministic."""
        if stored.status != 200:
            return stored
        body = json.loads(stored.body)  # PostgreSQL's json text: re-encoded like any answer
        if body.get("status") == "CONFIRMED" and "seat_ids" in body:
            body["ticket"] = self.bookings.tickets.ticket_json(show, booking_id,
                                                              list(body["seat_ids"]))
        return StoredResponse(200, encode_text(body))

    async def _replicated(self, conn: asyncpg.Connection, show: ShowInfo) -> None:
        """A sale is answered 200 (sold now, sold by the webhook, or a stored answer
        replayed) only once the synchronous standby flushed it: a commit whose wait
        for the standby was cancelled (our deadline) is visible here all the same, and
        a primary running alone commits without waiting. Until then the outcome is
        unknown: 503, and the same key's retry asks again."""
        if not self.home.replicated(show.region):
            return
        left = deadline.current().remaining() - REPLICATION_MARGIN_S
        if await replication.wait_standby_flushed(conn, max(left, 0.0),
                                                  without_standby_give_up=True):
            return
        self._count(show, "unreplicated")
        raise RegionUnavailable(show.region, "postgres standby", outcome="unknown")

    def _undone(self, show: ShowInfo, exc: ledger.Undone,
                not_captured: NodeError | None) -> Exception:
        """The error for a bc_confirm that raised (and so changed nothing)."""
        if exc.reason == Reason.NOT_CAPTURED and not_captured is not None:
            self._count(show, "payment_required")
            return not_captured
        if exc.reason == Reason.WRONG_AMOUNT:
            self._count(show, "payment_required")
            return PaymentRequired(f"the payment is not the booking's amount of "
                                   f"{exc.detail} paise", amount_paise=int(exc.detail or 0))
        if exc.reason == Reason.DEADLINE:
            return RegionUnavailable(show.region, "deadline passed before commit")
        if exc.reason == Reason.PAYMENT_RACED:  # two bookings raced to use one payment id
            self._count(show, "conflict")
            return PaymentRaced("this payment_id already paid another booking")
        return exc  # not captured, but the gateway's answer was: cannot happen

    def _count(self, show: ShowInfo, outcome: str) -> None:
        self.metrics.confirms.labels(self.metrics.region, show.region, outcome).inc()

    async def _captured_amount(self, booking_id: str,
                               payment_id: str) -> tuple[int | None, NodeError | None]:
        """The amount the gateway captured for this booking under `payment_id`, or why
        not (raised only if the key has no answer to replay)."""
        try:
            intent = await self.gateway.intent(payment_id)
        except GatewayUnavailable as exc:
            return None, exc
        if intent is None:
            return None, PaymentRequired("the gateway knows no such payment",
                                         payment_id=payment_id)
        if intent.booking_id != booking_id:
            return None, PaymentRequired("this payment is for another booking",
                                         payment_id=payment_id)
        if intent.status != "CAPTURED":
            return None, PaymentRequired(f"the payment is {intent.status}, not captured",
                                         payment_id=payment_id, payment_status=intent.status)
        return intent.amount_paise, None


def rendered(booking_id: str, stored: StoredResponse) -> StoredResponse:
    """A stored answer as the client sees it. A sale's is its text, verbatim; a
    refusal's is its outcome, rendered here (so the wording lives in one place)."""
    if stored.status == 200:
        return stored
    kept = json.loads(stored.body)
    if "outcome" not in kept:  # stored already rendered, by a node before bc_confirm
        return stored
    error = refusal(booking_id, kept["outcome"], kept["detail"])
    return StoredResponse(error.status, encode_text(error.body()))


async def sell(conn: asyncpg.Connection, show: ShowInfo, booking_id: str,
               payment_id: str, payment_status: str, amount_paise: int) -> list[str]:
    """The fenced sale (`bc_sell`, one round trip) for a payment of `amount_paise`.
    Raises a BookingError or PaymentRequired (wrong amount) having changed nothing,
    or returns the seats sold. Run it inside a transaction or savepoint."""
    try:
        sale = await ledger.sell(conn, show=show.id, booking=booking_id, payment=payment_id,
                                 payment_status=payment_status, amount=amount_paise)
    except ledger.Undone as exc:
        if exc.reason == Reason.PAYMENT_RACED:
            raise PaymentRaced("this payment_id already paid another booking") from None
        raise
    if sale.outcome == Outcome.SOLD:
        return sale.detail
    if sale.outcome == Outcome.WRONG_AMOUNT:
        raise PaymentRequired(f"the payment is {amount_paise} paise; the booking costs "
                              f"{sale.detail[0]} paise", amount_paise=int(sale.detail[0]))
    raise refusal(booking_id, sale.outcome, sale.detail)


def refusal(booking_id: str, outcome: str, detail: list[str]) -> BookingError:
    """bc_sell's refusal as the error the client gets."""
    if outcome == "not_pending":
        return BookingNotPending(booking_id, detail[0])
    if outcome == "expired":
        return HoldExpired(f"booking {booking_id} is {detail[0]}; hold the seats again",
                           status=detail[0])
    if outcome == "payment_reused":
        return PaymentReused("this payment_id already paid another booking")
    return SeatsTaken(detail)
