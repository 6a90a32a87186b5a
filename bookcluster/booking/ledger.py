"""The booking ledger: every booking transition, one SQL function each, called from here.

hold recorded (`bc_record_hold`; a batch of them: `bc_record_holds`), sold (`bc_sell`)
and confirmed (`bc_confirm`), released (`bc_release`), expired (`bc_expire`),
cancelled (`bc_cancel`), a sale refunded before entry (`bc_refund`), payment failed
(`bc_payment_failed`), refund started and refunded (`bc_refund_started`,
`bc_refunded`), checked in at the door (`bc_checkin`, counted by
`bc_checkin_counts`); their SQL is in
`bookcluster/db/functions/`. Nothing else in Python calls a booking `bc_*` function.
Arguments are passed by name; results come back as
typed values. A function that refuses by raising (having changed nothing) reaches the
caller as `Undone` with its reason; any other database error passes through as it is,
for the store's error table (`seats/home.py`) to map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import asyncpg
import msgspec

# (booking, show, seat) of a seat a transition freed: what the Redis mirror is told.
Freed = tuple[str, int, str]


class Outcome(StrEnum):
    """What bc_sell and bc_confirm answer."""

    SOLD = "sold"
    NOT_PENDING = "not_pending"  # already CONFIRMED
    EXPIRED = "expired"  # CANCELLED or EXPIRED
    SEATS_TAKEN = "seats_taken"
    PAYMENT_REUSED = "payment_reused"  # the payment id paid another booking
    WRONG_AMOUNT = "wrong_amount"  # bc_sell only; bc_confirm raises it
    # bc_confirm only
    SOLD_BEFORE = "sold_before"  # the payment's webhook sold it
    REPLAY = "replay"  # the key's stored answer
    NOT_FOUND = "not_found"
    KEY_REUSED = "key_reused"


class RefundOutcome(StrEnum):
    """What bc_refund answers."""

    REFUNDED = "refunded"
    REPLAY = "replay"  # refunded before: the same answer
    NOT_FOUND = "not_found"
    TICKET_USED = "ticket_used"  # its ticket went in at the door
    NOT_CONFIRMED = "not_confirmed"
    REFUND_CLOSED = "refund_closed"  # past the show's refund cut-off


class Reason(StrEnum):
    """Why a function raised, having changed nothing (its message: a stable code)."""

    NOT_CAPTURED = "bc_not_captured"  # a new confirm claim without a captured payment
    WRONG_AMOUNT = "bc_wrong_amount"  # detail: the booking's amount
    DEADLINE = "bc_deadline"  # past the caller's deadline before commit
    PAYMENT_RACED = "payment_reused"  # two bookings raced to use one payment id


class Undone(Exception):
    """A ledger function refused by raising: its transaction changed nothing."""

    def __init__(self, reason: Reason, detail: str | None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class HoldRecord:
    """bc_record_hold's answer: a token (recorded), or why not."""

    token: int | None
    refused: list[str]  # seats PostgreSQL says are not free
    limit_hit: str | None  # the cap reached (a field name of Limits)
    replayed: bool  # a duplicate under the same key recorded its hold first
    # In a batch only (bc_record_holds): the refusal bc_own would have raised for this
    # item ('bc_moved' / 'bc_theatre_moving') and its DETAIL; nothing else was done.
    fence: str | None = None
    fence_detail: str | None = None


@dataclass(frozen=True)
class HoldItem:
    """What one hold records (bc_record_hold's arguments that differ per hold)."""

    show: int
    seats: list[str]
    booking: str
    user: str
    expires: datetime
    prices: list[int]
    hold_key: str | None
    epoch: int | None
    address: str | None


@dataclass(frozen=True)
class HoldCaps:
    """bc_record_hold's arguments that a node's settings fix (the same for a batch)."""

    max_hold: timedelta
    max_seats: int
    max_holds: int
    max_address_seats: int
    max_address_holds: int


@dataclass(frozen=True)
class Sale:
    outcome: Outcome
    detail: list[str]  # seats sold or taken, the status, or the booking's amount


@dataclass(frozen=True)
class Confirmation:
    outcome: Outcome
    detail: list[str]
    answer_status: int | None
    answer_body: str | None


@dataclass(frozen=True)
class Cancellation:
    prior: str | None  # the booking's status before; None: no such booking
    freed: list[Freed]


def _undone(exc: asyncpg.RaiseError) -> Undone | None:
    try:
        reason = Reason(exc.message)  # without the DETAIL line
    except ValueError:
        return None
    return Undone(reason, exc.detail)


async def record_hold(conn: asyncpg.Connection, *, show: int, seats: list[str], booking: str,
                      user: str, expires: datetime, max_hold: timedelta, prices: list[int],
                      max_seats: int, max_holds: int, hold_key: str | None, epoch: int | None,
                      address: str | None, max_address_seats: int,
                      max_address_holds: int) -> HoldRecord:
    row = await conn.fetchrow(
        "SELECT token, refused, limit_hit, replayed FROM bc_record_hold("
        "p_show => $1, p_seats => $2, p_booking => $3, p_user => $4, p_expires => $5, "
        "p_max_hold => $6, p_prices => $7, p_max_seats => $8, p_max_holds => $9, "
        "p_hold_key => $10, p_epoch => $11, p_address => $12, p_max_address_seats => $13, "
        "p_max_address_holds => $14)",
        show, seats, booking, user, expires, max_hold, prices, max_seats, max_holds, hold_key,
        epoch, address, max_address_seats, max_address_holds)
    return HoldRecord(None if row["token"] is None else int(row["token"]),
                      list(row["refused"] or []), row["limit_hit"], bool(row["replayed"]))


async def record_item(conn: asyncpg.Connection, item: HoldItem, caps: HoldCaps) -> HoldRecord:
    """One hold as `record_hold` records it (a batch of one)."""
    return await record_hold(
        conn, show=item.show, seats=item.seats, booking=item.booking, user=item.user,
        expires=item.expires, max_hold=caps.max_hold, prices=item.prices,
        max_seats=caps.max_seats, max_holds=caps.max_holds, hold_key=item.hold_key,
        epoch=item.epoch, address=item.address, max_address_seats=caps.max_address_seats,
        max_address_holds=caps.max_address_holds)


def holds_json(items: Sequence[HoldItem]) -> str:
    """bc_record_holds' p_items."""
    return msgspec.json.encode([
        {"show": i.show, "seats": i.seats, "booking": i.booking, "user": i.user,
         "expires": i.expires.isoformat(), "prices": i.prices, "hold_key": i.hold_key,
         "epoch": i.epoch, "address": i.address} for i in items]).decode()


async def record_holds(conn: asyncpg.Connection, items: Sequence[HoldItem],
                       caps: HoldCaps) -> list[HoldRecord]:
    """Several holds in one statement and one commit (`bc_record_holds`): one answer
    per item, in order; each item is decided as `record_hold` decides it, and an item
    whose theatre is fenced out answers `fence` instead of raising."""
    rows = await conn.fetch(
        "SELECT item, token, refused, limit_hit, replayed, fence, fence_detail "
        "FROM bc_record_holds(p_items => $1::jsonb, p_max_hold => $2, p_max_seats => $3, "
        "p_max_holds => $4, p_max_address_seats => $5, p_max_address_holds => $6)",
        holds_json(items), caps.max_hold, caps.max_seats, caps.max_holds,
        caps.max_address_seats, caps.max_address_holds)
    records: list[HoldRecord | None] = [None] * len(items)
    for row in rows:
        records[row["item"]] = HoldRecord(
            None if row["token"] is None else int(row["token"]), list(row["refused"] or []),
            row["limit_hit"], bool(row["replayed"]), row["fence"], row["fence_detail"])
    missing = [i for i, r in enumerate(records) if r is None]
    if missing:
        raise RuntimeError(f"bc_record_holds answered no row for items {missing}")
    return [r for r in records if r is not None]


async def sell(conn: asyncpg.Connection, *, show: int, booking: str, payment: str,
               payment_status: str, amount: int) -> Sale:
    """The fenced sale. Raises Undone(PAYMENT_RACED); run it in a transaction or
    savepoint (a refusal changes nothing, a race aborts)."""
    try:
        row = await conn.fetchrow(
            "SELECT outcome, detail FROM bc_sell(p_show => $1, p_booking => $2, "
            "p_payment => $3, p_payment_status => $4, p_amount => $5)",
            show, booking, payment, payment_status, amount)
    except asyncpg.RaiseError as exc:
        raise (_undone(exc) or exc) from None
    return Sale(Outcome(row["outcome"]), list(row["detail"]))


async def confirm(conn: asyncpg.Connection, *, show: int, booking: str, user: str, key: str,
                  request_hash: str, payment: str, amount: int | None, region: str,
                  deadline: datetime, epoch: int | None) -> Confirmation:
    """Claim the key, sell, store the answer: one statement. Raises Undone."""
    try:
        row = await conn.fetchrow(
            "SELECT outcome, detail, answer_status, answer_body FROM bc_confirm("
            "p_show => $1, p_booking => $2, p_user => $3, p_key => $4, p_hash => $5, "
            "p_payment => $6, p_amount => $7, p_region => $8, p_deadline => $9, "
            "p_epoch => $10)",
            show, booking, user, key, request_hash, payment, amount, region, deadline, epoch)
    except asyncpg.RaiseError as exc:
        raise (_undone(exc) or exc) from None
    return Confirmation(Outcome(row["outcome"]), list(row["detail"] or []),
                        row["answer_status"], row["answer_body"])


async def release(conn: asyncpg.Connection, bookings: list[str]) -> list[Freed]:
    """Free the seats these bookings still hold (a hold PostgreSQL never recorded as
    a booking's, or one being dropped)."""
    return _freed(await conn.fetch(
        "SELECT booking_id, show_id, seat_id FROM bc_release(p_bookings => $1)", bookings))


async def expire(conn: asyncpg.Connection, bookings: list[str]) -> list[Freed]:
    """INITIATED -> EXPIRED, seats freed. The caller has locked the booking rows."""
    if not bookings:
        return []
    return _freed(await conn.fetch(
        "SELECT booking_id, show_id, seat_id FROM bc_expire(p_bookings => $1)", bookings))


async def cancel(conn: asyncpg.Connection, booking: str, user: str) -> Cancellation:
    """The user's cancel: INITIATED (or CANCELLED already) -> CANCELLED, seats freed;
    any other status is left as it is (see `prior`)."""
    row = await conn.fetchrow(
        "SELECT prior, show_id, freed FROM bc_cancel(p_booking => $1, p_user => $2)",
        booking, user)
    return _cancellation(booking, row)


@dataclass(frozen=True)
class Refund:
    """bc_refund's answer: `detail` the seats freed (a replay: the booking's seats) or
    the status (not_confirmed); `body` the answer (refunded and replay only)."""

    outcome: RefundOutcome
    detail: list[str]
    body: str | None


async def refund(conn: asyncpg.Connection, *, show: int, booking: str, user: str | None,
                 reason: str, region: str, closes_at: datetime, deadline: datetime,
                 epoch: int | None) -> Refund:
    """A CONFIRMED booking's refund before entry, one statement (`user` None: an
    operator's, of any booking). Raises Undone(DEADLINE) having changed nothing."""
    try:
        row = await conn.fetchrow(
            "SELECT outcome, detail, answer_body FROM bc_refund(p_show => $1, "
            "p_booking => $2, p_user => $3, p_reason => $4, p_region => $5, "
            "p_closes_at => $6, p_deadline => $7, p_epoch => $8)",
            show, booking, user, reason, region, closes_at, deadline, epoch)
    except asyncpg.RaiseError as exc:
        raise (_undone(exc) or exc) from None
    return Refund(RefundOutcome(row["outcome"]), list(row["detail"] or []), row["answer_body"])


async def payment_failed(conn: asyncpg.Connection, booking: str, payment: str,
                         amount: int) -> Cancellation:
    """The payment failed: recorded; an INITIATED booking is cancelled, its user told."""
    row = await conn.fetchrow(
        "SELECT prior, show_id, freed FROM bc_payment_failed(p_booking => $1, "
        "p_payment => $2, p_amount => $3)", booking, payment, amount)
    return _cancellation(booking, row)


async def refund_started(conn: asyncpg.Connection, booking: str, payment: str, amount: int,
                         reason: str) -> bool:
    """A captured payment goes back: a refund job (and REFUND_PENDING, the user told,
    for a booking we issued). Returns whether the booking is known here."""
    return bool(await conn.fetchval(
        "SELECT bc_refund_started(p_booking => $1, p_payment => $2, p_amount => $3, "
        "p_reason => $4)", booking, payment, amount, reason))


async def refunded(conn: asyncpg.Connection, booking: str, payment: str) -> bool:
    """REFUND_PENDING -> REFUNDED. Returns whether it changed."""
    return bool(await conn.fetchval(
        "SELECT bc_refunded(p_booking => $1, p_payment => $2)", booking, payment))


def _freed(rows: list[asyncpg.Record]) -> list[Freed]:
    return [(r["booking_id"], r["show_id"], r["seat_id"]) for r in rows]


def _cancellation(booking: str, row: asyncpg.Record) -> Cancellation:
    return Cancellation(row["prior"], [(booking, row["show_id"], seat)
                                       for seat in row["freed"]])


@dataclass(frozen=True)
class CheckinScan:
    """bc_checkin's answer."""

    outcome: str
    replayed: bool
    seats: list[str]
    booking_status: str | None
    scanned_at: datetime | None
    gate: str | None
    prior_at: datetime | None
    prior_gate: str | None


async def checkin(conn: asyncpg.Connection, *, show: int, booking: str,
                  seats: list[str] | None, nonce: str, gate: str, scanner: str,
                  direction: str, at: datetime, offline: bool) -> CheckinScan:
    """One scan, decided and recorded under the booking's row lock (in the caller's
    fenced transaction)."""
    row = await conn.fetchrow(
        "SELECT outcome, replayed, seats, booking_status, scanned_at, gate, prior_at, "
        "prior_gate FROM bc_checkin(p_show => $1, p_booking => $2, p_seats => $3, "
        "p_nonce => $4, p_gate => $5, p_scanner => $6, p_direction => $7, p_at => $8, "
        "p_offline => $9)", show, booking, seats, nonce, gate, scanner, direction, at, offline)
    assert row is not None
    return CheckinScan(row["outcome"], bool(row["replayed"]), list(row["seats"] or []),
                       row["booking_status"], row["scanned_at"], row["gate"],
                       row["prior_at"], row["prior_gate"])


async def admitted(conn: asyncpg.Connection, booking: str) -> bool:
    """Whether the booking's ticket went in at the door (a cancel or refund is refused)."""
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM checkin_scan WHERE booking_id = $1 "
        "AND outcome IN ('admitted', 'entered_twice'))", booking))


async def checkin_counts(conn: asyncpg.Connection, shows: list[int]) -> list[dict[str, int]]:
    """Per show: seats sold, admitted (ever), inside now."""
    return _heads(await conn.fetch("SELECT show_id, sold, admitted, inside FROM "
                                   "bc_checkin_counts(p_shows => $1)", shows))


async def checkin_heads(conn: asyncpg.Connection, opens_before_s: float,
                        closes_after_s: float) -> list[dict[str, int]]:
    """`checkin_counts` of every show here whose check-in window is open and that sold a
    seat (this region is its home)."""
    return _heads(await conn.fetch(
        "SELECT show_id, sold, admitted, inside FROM bc_checkin_heads("
        "p_opens_before => make_interval(secs => $1), "
        "p_closes_after => make_interval(secs => $2))", opens_before_s, closes_after_s))


def _heads(rows: list[asyncpg.Record]) -> list[dict[str, int]]:
    return [{"show_id": r["show_id"], "sold": r["sold"], "admitted": r["admitted"],
             "inside": r["inside"]} for r in rows]
