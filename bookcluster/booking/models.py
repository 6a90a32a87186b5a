"""Request bodies and the booking's JSON shape: declared once, validated once at the edge.

A view reads and parses a body (`node/body.py`: size, time, hostile JSON), turns it
into one of these models here, and passes the model down; nothing below parses or
checks it again. The OpenAPI components of these bodies are generated from the same
classes (`node/schemas.py`), and the confirm's stored answer, built by `bc_confirm`
in SQL, is held to `Booking`'s fields by `tests/unit/test_models.py`.

msgspec, not pydantic: measured by `loadtests/body_cpu.py` on this project's
bodies, msgspec's parse + conversion costs about a third of pydantic v2's CPU.
Refusals keep their shape: 422 `invalid_input`, with `field` naming the input at
fault (and `seats`, `limit` where they were given before).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

import asyncpg
import msgspec
from msgspec import Meta

from bookcluster.booking import ids
from bookcluster.booking.gateway import MAX_RETURN_URL, return_url_allowed
from bookcluster.errors import InvalidInput, MissingHeader
from bookcluster.topology.model import Topology

PAYMENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
GATEWAY_ID = PAYMENT_ID  # the gateway's ids (payments, events) share one alphabet
MAX_PAISE = 2**31 - 1  # amount columns are `integer`
# payment_event_by_show indexes a booking id's show number as a `bigint`.
SHOW_PREFIX = re.compile(r"^b([0-9]+)-")
MAX_SHOW_DIGITS = 18
BookingStatus = Literal["INITIATED", "CONFIRMED", "CANCELLED", "EXPIRED"]
PaymentStatus = Literal["RECORDED", "CAPTURED", "FAILED", "REFUND_PENDING", "REFUNDED"]
EventKind = Literal["payment.captured", "payment.failed"]
BOOKING_STATUSES: tuple[str, ...] = get_args(BookingStatus)
PAYMENT_STATUSES: tuple[str, ...] = get_args(PaymentStatus)
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)


def _pattern(regex: re.Pattern[str], **more: Any) -> Meta:
    """A pattern for the document only: the code checks it with `regex` itself."""
    return Meta(extra_json_schema={"pattern": regex.pattern, **more})


SeatId = Annotated[str, _pattern(ids.SEAT_ID)]
BookingId = Annotated[str, _pattern(ids.BOOKING_ID)]
UserId = Annotated[str, _pattern(ids.USER_ID)]
ShowId = Annotated[int, Meta(ge=1)]
Count = Annotated[int, Meta(ge=0)]
Time = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]


# -- request bodies ------------------------------------------------------------------------

class HoldRequest(msgspec.Struct, frozen=True):
    """Seats to hold, all or none, for the token's user."""

    # maxItems: the topology's max_seats_per_booking, set by `node/schemas.py`.

    seat_ids: Annotated[list[SeatId], Meta(min_length=1, extra_json_schema={
        "uniqueItems": True})]
    user_id: Annotated[UserId, Meta(description="if given, must be the token's user")] \
        | msgspec.UnsetType = msgspec.UNSET

    @classmethod
    def parse(cls, body: Any, cap: int, user: str) -> HoldRequest:
        """The holder is the token's user; a `user_id` in the body may only repeat it.
        Unknown fields are ignored (as before)."""
        if not isinstance(body, dict):
            raise InvalidInput("body must be a JSON object with seat_ids")
        if "user_id" in body and body["user_id"] != user:
            raise InvalidInput("user_id must be the token's user (or be left out)",
                               field="user_id")
        seat_ids = body.get("seat_ids")
        if isinstance(seat_ids, list) and len(seat_ids) > cap:
            # First: every check after this costs time per seat id.
            raise InvalidInput(f"at most {cap} seats per booking", field="seat_ids", limit=cap)
        try:
            request = msgspec.convert(body, cls)
        except msgspec.ValidationError as exc:
            raise InvalidInput(f"seat_ids must be a non-empty list of strings ({exc})",
                               field="seat_ids") from None
        if len(set(request.seat_ids)) != len(request.seat_ids):
            duplicates = sorted(s for s, n in Counter(request.seat_ids).items() if n > 1)
            raise InvalidInput("seat_ids has duplicates", field="seat_ids", seats=duplicates)
        return msgspec.structs.replace(request, seat_ids=sorted(request.seat_ids))


class BestRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How many seats to hold, chosen by the home master (`seats/best.py`)."""

    # maximum: the topology's max_seats_per_booking, set by `node/schemas.py`.

    count: Annotated[int, Meta(ge=1)]
    category: Annotated[str, Meta(min_length=1, max_length=64,
                                  description="only seats of this category")] | None = None
    accessible: Annotated[bool, Meta(description="only accessible spaces")] = False
    allow_split: Annotated[bool, Meta(
        description="when no block of `count` side by side (in one row, across an aisle or "
                    "in two adjacent rows) is free, take the best seats apart")] = False

    @classmethod
    def parse(cls, body: Any, cap: int) -> BestRequest:
        if not isinstance(body, dict):
            raise InvalidInput("body must be a JSON object with count", field="count")
        try:
            request = msgspec.convert(body, cls)
        except msgspec.ValidationError as exc:
            raise InvalidInput(f"invalid best-available request ({exc})",
                               field=_field_of(exc)) from None
        if request.count > cap:
            raise InvalidInput(f"at most {cap} seats per booking", field="count", limit=cap)
        return request


def _field_of(exc: msgspec.ValidationError) -> str:
    """The field a msgspec error names (`... - at `$.count``), else "body"."""
    found = re.search(r"\$\.([a-z_]+)", str(exc)) or re.search(r"field `([a-z_]+)`", str(exc))
    return found.group(1) if found else "body"


class ConfirmRequest(msgspec.Struct, frozen=True):
    """The payment that paid for the booking."""

    payment_id: Annotated[str, _pattern(PAYMENT_ID)]


@dataclass(frozen=True)
class Confirmation:
    """A validated confirm call: its Idempotency-Key, its payment, and the hash a retry
    under the same key must match."""

    key: str
    payment_id: str
    request_hash: str

    @classmethod
    def parse(cls, booking_id: str, key: str | None, body: Any) -> Confirmation:
        if not key:
            raise MissingHeader("Idempotency-Key header is required", header="Idempotency-Key")
        ids.idempotency_key(key)
        if not isinstance(body, dict) or not isinstance(body.get("payment_id"), str) \
                or not PAYMENT_ID.match(body["payment_id"]):
            raise InvalidInput("body must be {\"payment_id\": str} (1-128 of [A-Za-z0-9_-])",
                               field="payment_id")
        return cls(key, body["payment_id"], request_hash(booking_id, body))


def request_hash(booking_id: str, body: Any) -> str:
    """Of the body as sent, unknown fields included: the same key with any other body
    is 422, and hashes stored by earlier versions still match."""
    canonical = json.dumps({"booking_id": booking_id, "body": body}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class PayRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where a hosted checkout sends the customer back (the body is optional)."""

    return_url: Annotated[str, Meta(max_length=MAX_RETURN_URL, extra_json_schema={
        "format": "uri", "description": "http://<one of the cluster's nodes>/...: where the "
                                        "gateway's checkout sends the customer back"})]

    @classmethod
    def parse(cls, body: Any, topology: Topology) -> str | None:
        """The return URL: None for an empty body, else a page of one of the cluster's
        nodes (so the checkout cannot be made an open redirect)."""
        if body == {}:
            return None
        try:
            url = msgspec.convert(body, cls).return_url
        except msgspec.ValidationError:
            url = None
        if url is None or not return_url_allowed(url, topology):
            raise InvalidInput("body must be empty or {\"return_url\": \"http://<a node of "
                               "this cluster>/...\"}", field="return_url")
        return url


class PaymentEvent(msgspec.Struct, frozen=True):
    """The gateway's signed payment event."""

    event_id: Annotated[str, _pattern(GATEWAY_ID)]
    kind: EventKind
    payment_id: Annotated[str, _pattern(GATEWAY_ID)]
    booking_id: BookingId
    amount_paise: Annotated[int, Meta(ge=0, le=MAX_PAISE)]

    @classmethod
    def parse(cls, event: Any) -> PaymentEvent:
        """Signed or not, what PostgreSQL cannot store is a 422, not a 500. Any booking id
        the gateway signs is stored (one we cannot route is refunded), as long as
        PostgreSQL can hold and index it."""
        types = {"event_id": str, "kind": str, "payment_id": str, "booking_id": str,
                 "amount_paise": int}
        if not isinstance(event, dict) or any(not isinstance(event.get(k), t)
                                              for k, t in types.items()):
            raise InvalidInput("webhook needs event_id, kind, payment_id, booking_id "
                               "(strings) and amount_paise (integer)")
        if event["kind"] not in EVENT_KINDS:
            raise InvalidInput(f"unknown event kind {event['kind']!r}", field="kind")
        for name in ("event_id", "payment_id"):
            if not GATEWAY_ID.fullmatch(event[name]):
                raise InvalidInput(f"{name} must be 1-128 of [A-Za-z0-9_-]", field=name)
        if isinstance(event["amount_paise"], bool) \
                or not 0 <= event["amount_paise"] <= MAX_PAISE:
            raise InvalidInput(f"amount_paise must be 0..{MAX_PAISE}", field="amount_paise")
        prefix = SHOW_PREFIX.match(event["booking_id"])
        if not GATEWAY_ID.fullmatch(event["booking_id"]) \
                or (prefix is not None and len(prefix.group(1)) > MAX_SHOW_DIGITS):
            raise InvalidInput("booking_id must be 1-128 of [A-Za-z0-9_-]", field="booking_id")
        return cls(event["event_id"], event["kind"], event["payment_id"],
                   event["booking_id"], event["amount_paise"])

    def as_job(self) -> dict[str, Any]:
        return msgspec.structs.asdict(self)


# -- answers -------------------------------------------------------------------------------

class Booking(msgspec.Struct, frozen=True):
    """A booking."""

    # Built by `booking_json`, and in SQL by `bc_confirm` for the confirm's stored answer
    # (tests/unit/test_models.py holds both to these fields).

    booking_id: BookingId
    user_id: UserId
    show_id: ShowId
    region: str
    seat_ids: Annotated[list[SeatId], Meta(min_length=1)]
    status: BookingStatus
    amount_paise: Count
    payment_id: str | None
    created_at: Time
    expires_at: Time
    hold_token: int


class Hold(msgspec.Struct, frozen=True):
    """A hold's answer (201), also when replayed under its Idempotency-Key."""

    booking_id: BookingId
    show_id: ShowId
    user_id: UserId
    region: str
    seat_ids: Annotated[list[SeatId], Meta(min_length=1)]
    status: Literal["INITIATED"]
    amount_paise: Count
    expires_at: Time
    hold_token: int
    orphaned: Annotated[list[SeatId], Meta(description=(
        "free seats this pick leaves alone between taken seats or at a row's end (the "
        "screen's `no_orphan_seats` is `warn`); absent when none"))] \
        | msgspec.UnsetType = msgspec.UNSET


class BestHold(Hold, frozen=True, kw_only=True):
    """A best-available hold's answer: a hold, and the seats chosen (its `seat_ids`)."""

    seats: Annotated[list[SeatId], Meta(min_length=1)]


class Payment(msgspec.Struct, frozen=True):
    """A payment recorded for a booking."""

    payment_id: str
    status: PaymentStatus
    amount_paise: Count


class SignedTicket(msgspec.Struct, frozen=True):
    """A confirmed booking's ticket, as its QR holds it (`ticket_keys.py`): its owner's
    answers only. Any gate verifies `payload` with the keys of `GET /tickets/keys`."""

    payload: str
    key_id: str
    ticket_id: str


class ConfirmedBooking(Booking, frozen=True):
    """A confirm's answer: the booking, and its signed ticket."""

    ticket: SignedTicket | None = None


class BookingWithPayments(Booking, frozen=True):
    """A booking with its payments (and, once confirmed, its signed ticket)."""

    payments: list[Payment]
    ticket: SignedTicket | None = None


class RefundOf(msgspec.Struct, frozen=True):
    """The payment a refund hands back (through the refund job, at the gateway)."""

    payment_id: str
    amount_paise: Count


class RefundedBooking(msgspec.Struct, frozen=True):
    """A refund's answer (built in SQL by `bc_refund`), the same text when asked again."""

    booking_id: BookingId
    user_id: UserId
    show_id: ShowId
    region: str
    seat_ids: Annotated[list[SeatId], Meta(min_length=1)]
    status: Literal["CANCELLED"]
    amount_paise: Count
    refund: RefundOf


HOLD_FIELDS = tuple(f for f in Hold.__struct_fields__ if f != "orphaned")


def booking_json(row: asyncpg.Record, region: str) -> dict[str, Any]:
    """`Booking` as the JSON object the services hand around (the worker's jobs read it
    too): built here only."""
    return {
        "booking_id": row["id"],
        "user_id": row["user_id"],
        "show_id": row["show_id"],
        "region": region,
        "seat_ids": list(row["seat_ids"]),
        "status": row["status"],
        "amount_paise": row["amount_paise"],
        "payment_id": row["payment_id"],
        "created_at": row["created_at"].isoformat(),
        "expires_at": row["expires_at"].isoformat(),
        "hold_token": row["fence_token"],
    }


def hold_json(booking: dict[str, Any]) -> dict[str, Any]:
    """A booking's `Hold` fields: its hold answer."""
    return {field: booking[field] for field in HOLD_FIELDS}


def hold_answer(booking_id: str, show_id: int, user_id: str, region: str, seat_ids: list[str],
                amount_paise: int, expires_at: str, hold_token: int) -> dict[str, Any]:
    """A new hold's answer: `Hold`'s fields."""
    return {"booking_id": booking_id, "show_id": show_id, "user_id": user_id, "region": region,
            "seat_ids": seat_ids, "status": "INITIATED", "amount_paise": amount_paise,
            "expires_at": expires_at, "hold_token": hold_token}


def payment_json(row: asyncpg.Record) -> dict[str, Any]:
    return {"payment_id": row["id"], "status": row["status"], "amount_paise": row["amount_paise"]}


_encoder = msgspec.json.Encoder()


def encode(answer: Any) -> bytes:
    """An answer's JSON bytes (msgspec: about half the CPU of `json.dumps`)."""
    return _encoder.encode(answer)


MODELS = (HoldRequest, BestRequest, Hold, BestHold, Booking, BookingWithPayments,
          SignedTicket, ConfirmedBooking, RefundOf, RefundedBooking,
          ConfirmRequest, PayRequest, PaymentEvent)
