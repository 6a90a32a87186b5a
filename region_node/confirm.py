"""Confirm: the fenced, idempotent, deadlock-free sale of a held booking.

One PostgreSQL transaction on the home primary:
1. claims the Idempotency-Key for the booking's owner (another user's booking
   is 404). A duplicate arriving while the first runs blocks on the key's
   unique index until the first commits, then replays its stored response
   byte for byte — it never runs twice;
2. asks the gateway whether `payment_id` is CAPTURED for this booking; if not
   (unknown, pending, failed, another booking's, another amount) the answer is
   402 and the transaction rolls back: nothing changed, nothing stored under
   the key, so the same request succeeds once the payment is captured;
3. locks the booking row, then its seat rows in seat-id order (FOR UPDATE);
4. checks every seat still carries this booking's fencing token; seats whose
   hold was lost but that are AVAILABLE (nobody re-held them) are re-taken
   under the same row locks, so a late confirm succeeds only when no one else
   could have the seats;
5. marks seats BOOKED, booking_seat.sold (unique per seat: the last line of
   defence), the booking CONFIRMED, records the payment and the outbox jobs;
6. stores the response under the key.
Business refusals (409) are stored too, so retries get the same answer. If the
payment's webhook already sold the booking with this payment, the answer is 200.
After commit, Redis turns the holds into booked seats and publishes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from region_node import ids, mirror
from region_node.bookings import BOOKING_QUERY, BookingService, booking_json
from region_node.catalog import ShowInfo
from region_node.errors import (
    BookingError,
    BookingNotPending,
    HoldExpired,
    IdempotencyKeyReused,
    InvalidInput,
    MissingHeader,
    NotFound,
    PaymentRequired,
    PaymentReused,
    SeatsTaken,
)
from region_node.gateway import GatewayClient

log = logging.getLogger(__name__)

PAYMENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: str  # JSON text, returned verbatim on every replay


def validate_confirm(key: str | None, body: Any) -> tuple[str, str]:
    if not key:
        raise MissingHeader("Idempotency-Key header is required", header="Idempotency-Key")
    ids.idempotency_key(key)
    if not isinstance(body, dict) or not isinstance(body.get("payment_id"), str) \
            or not PAYMENT_ID.match(body["payment_id"]):
        raise InvalidInput("body must be {\"payment_id\": str} (1-128 of [A-Za-z0-9_-])",
                           field="payment_id")
    return key, body["payment_id"]


def request_hash(booking_id: str, body: Any) -> str:
    canonical = json.dumps({"booking_id": booking_id, "body": body}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class PaymentRaced(PaymentReused):
    """Two bookings raced to use one payment id; the losing transaction was aborted."""


class ConfirmService:
    def __init__(self, bookings: BookingService, gateway: GatewayClient) -> None:
        self.bookings = bookings
        self.gateway = gateway
        self.home = bookings.home
        self.metrics = bookings.metrics

    async def confirm(self, booking_id: str, owner: str, key: str | None,
                      body: Any) -> StoredResponse:
        key, payment_id = validate_confirm(key, body)
        show = await self.bookings.show_of_booking(booking_id)
        fingerprint = request_hash(booking_id, body)
        try:
            response, sold = await self._confirm_tx(show, booking_id, owner, key, fingerprint,
                                                    payment_id)
        except PaymentRaced:  # the transaction was undone: nothing is stored under the key
            self._count(show, "conflict")
            raise
        except PaymentRequired:  # rolled back: the same request works once captured
            self._count(show, "payment_required")
            raise
        except asyncpg.UniqueViolationError:  # raced with another sale: nothing committed
            self._count(show, "conflict")
            raise SeatsTaken([]) from None
        if sold:
            self._count(show, "confirmed")
            # Committed with its mirror rows: Redis learns it now, or from the worker.
            await mirror.apply_now(self.home, show.region,
                                   {("book", show.id, booking_id): sold})
        return response

    def _count(self, show: ShowInfo, outcome: str) -> None:
        self.metrics.confirms.labels(self.metrics.region, show.region, outcome).inc()

    async def _captured_amount(self, booking_id: str, payment_id: str) -> int:
        """The amount the gateway captured for this booking under `payment_id`, or 402."""
        intent = await self.gateway.intent(payment_id)
        if intent is None:
            raise PaymentRequired("the gateway knows no such payment", payment_id=payment_id)
        if intent.booking_id != booking_id:
            raise PaymentRequired("this payment is for another booking",
                                  payment_id=payment_id)
        if intent.status != "CAPTURED":
            raise PaymentRequired(f"the payment is {intent.status}, not captured",
                                  payment_id=payment_id, payment_status=intent.status)
        return intent.amount_paise

    async def _confirm_tx(self, show: ShowInfo, booking_id: str, owner: str, key: str,
                          fingerprint: str, payment_id: str) -> tuple[StoredResponse, list[str]]:
        """Six round trips to the home primary (BEGIN, claim, sell, read, store, COMMIT)
        and one to the gateway."""
        async with self.home.transaction(show.region) as conn:
            user_id = await conn.fetchval(CLAIM_KEY, booking_id, key, fingerprint, owner)
            if user_id is None:
                replay = await _replay(conn, booking_id, owner, key, fingerprint)
                self._count(show, "replayed")
                return replay, []
            amount = await self._captured_amount(booking_id, payment_id)
            try:
                sold = await sell(conn, show, booking_id, payment_id, "CAPTURED", amount)
                row = await conn.fetchrow(BOOKING_QUERY + " WHERE b.id = $1 GROUP BY b.id",
                                          booking_id)
                response = StoredResponse(200, json.dumps(booking_json(row, show.region)))
            except (PaymentRaced, PaymentRequired):
                raise
            except BookingNotPending as exc:
                row = await conn.fetchrow(BOOKING_QUERY + " WHERE b.id = $1 GROUP BY b.id",
                                          booking_id)
                if row["payment_id"] == payment_id:  # the webhook's saga sold it first
                    response = StoredResponse(200, json.dumps(booking_json(row, show.region)))
                else:
                    response = StoredResponse(exc.status, json.dumps(exc.body()))
                sold = []
            except BookingError as exc:  # bc_sell refused and changed nothing: store the 409
                self._count(show, exc.code)
                response, sold = StoredResponse(exc.status, json.dumps(exc.body())), []
            await conn.execute(
                "UPDATE idempotency SET status_code = $3, response_body = $4 "
                "WHERE user_id = $1 AND key = $2", user_id, key, response.status, response.body)
            return response, sold


# Claims the key for the booking's user in one statement. No row back means the
# booking does not exist or the key is taken; a concurrent duplicate waits here
# on the key's unique index until the first transaction ends.
CLAIM_KEY = """
INSERT INTO idempotency (user_id, key, request_hash, status_code, response_body)
SELECT user_id, $2, $3, 0, '' FROM booking WHERE id = $1 AND user_id = $4
ON CONFLICT DO NOTHING RETURNING user_id
"""


async def _replay(conn: asyncpg.Connection, booking_id: str, owner: str, key: str,
                  fingerprint: str) -> StoredResponse:
    row = await conn.fetchrow(
        "SELECT i.request_hash, i.status_code, i.response_body FROM booking b "
        "LEFT JOIN idempotency i ON i.user_id = b.user_id AND i.key = $2 "
        "WHERE b.id = $1 AND b.user_id = $3", booking_id, key, owner)
    if row is None:
        raise NotFound(f"no booking {booking_id!r}", id=booking_id)
    if row["request_hash"] != fingerprint:
        raise IdempotencyKeyReused("this Idempotency-Key was used with a different request")
    return StoredResponse(row["status_code"], row["response_body"])


async def sell(conn: asyncpg.Connection, show: ShowInfo, booking_id: str,
               payment_id: str, payment_status: str, amount_paise: int) -> list[str]:
    """The fenced sale (`bc_sell`, one round trip) for a payment of `amount_paise`.
    Raises a BookingError or PaymentRequired (wrong amount) having changed nothing,
    or returns the seats sold. Run it inside a transaction or savepoint."""
    try:
        row = await conn.fetchrow("SELECT outcome, detail FROM bc_sell($1, $2, $3, $4, $5)",
                                  show.id, booking_id, payment_id, payment_status,
                                  amount_paise)
    except asyncpg.RaiseError as exc:
        if "payment_reused" in str(exc):
            raise PaymentRaced("this payment_id already paid another booking") from None
        raise
    outcome, detail = row["outcome"], list(row["detail"])
    if outcome == "sold":
        return detail
    if outcome == "not_pending":
        raise BookingNotPending(booking_id, detail[0])
    if outcome == "expired":
        raise HoldExpired(f"booking {booking_id} is {detail[0]}; hold the seats again",
                          status=detail[0])
    if outcome == "wrong_amount":
        raise PaymentRequired(f"the payment is {amount_paise} paise; the booking costs "
                              f"{detail[0]} paise", amount_paise=int(detail[0]))
    if outcome == "payment_reused":
        raise PaymentReused("this payment_id already paid another booking")
    raise SeatsTaken(detail)
