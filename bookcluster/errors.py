"""Errors a node raises. Views only raise; `middlewares.error_middleware` maps them to HTTP.

Two families: a `RequestError` is the caller's mistake (4xx, fix the request),
a `BookingError` is a refusal by the booking rules (409, the world changed).
Region outages come from `bookcluster.topology.RegionUnavailable` (503); a transaction the
home primary aborted to break a lock wait is `TransactionAborted` (503); a write
the node's full write queue sheds is `Overloaded` (503).
"""

from __future__ import annotations

from typing import Any


class NodeError(Exception):
    status = 500
    code = "internal"
    headers: dict[str, str] = {}  # noqa: RUF012 - replaced per instance, never mutated

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details}


class RequestError(NodeError):
    status = 400
    code = "bad_request"


class MalformedId(RequestError):
    code = "malformed_id"


class MissingHeader(RequestError):
    code = "missing_header"


class Unauthorized(RequestError):
    """No valid bearer token: 401 with a WWW-Authenticate challenge (RFC 6750)."""

    status = 401
    code = "unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="bookcluster"'}  # noqa: RUF012


class Forbidden(RequestError):
    status = 403
    code = "forbidden"


class PaymentRequired(RequestError):
    """Confirm without a payment the gateway captured for this booking and amount."""

    status = 402
    code = "payment_required"


class RateLimited(RequestError):
    status = 429
    code = "rate_limited"

    def __init__(self, limit: str, retry_after_s: int) -> None:
        super().__init__(f"too many requests ({limit}); retry in {retry_after_s} s",
                         limit=limit, retry_after_s=retry_after_s)
        self.headers = {"Retry-After": str(retry_after_s)}


class NotFound(RequestError):
    status = 404
    code = "not_found"


class TicketNotReady(NotFound):
    code = "ticket_not_ready"


class InvalidInput(RequestError):
    status = 422
    code = "invalid_input"


class IdempotencyKeyReused(RequestError):
    status = 422
    code = "idempotency_key_reused"


class BodyTooLarge(RequestError):
    status = 413
    code = "body_too_large"


class BodyTimeout(RequestError):
    """The request's body did not arrive in time (a slow or stalled client)."""

    status = 408
    code = "request_timeout"


class BookingError(NodeError):
    status = 409
    code = "conflict"


class SeatsUnavailable(BookingError):
    code = "seats_unavailable"

    def __init__(self, seats: list[str]) -> None:
        super().__init__(f"{len(seats)} seat(s) not free: {', '.join(seats)}", seats=seats)


class NoBlockAvailable(BookingError):
    """Best available: no block of the size asked is free (nothing was held)."""

    code = "no_block_available"

    def __init__(self, count: int, longest: int) -> None:
        super().__init__(f"no block of {count} seat(s) is free", count=count,
                         longest_free_run=longest)


class OrphanSeat(BookingError):
    """A manual pick that would leave a seat alone, on a screen that refuses that."""

    code = "orphan_seat"

    def __init__(self, seats: list[str]) -> None:
        super().__init__(f"this pick would leave {', '.join(seats)} alone; pick seats "
                         "beside it or leave a gap of two", seats=seats)


class SeatsTaken(BookingError):
    code = "seats_taken"

    def __init__(self, seats: list[str]) -> None:
        super().__init__("the hold was lost: these seats now belong to another booking",
                         seats=seats)


class HoldExpired(BookingError):
    code = "hold_expired"


class BookingNotPending(BookingError):
    code = "booking_not_pending"

    def __init__(self, booking_id: str, status: str) -> None:
        super().__init__(f"booking {booking_id} is {status}", status=status)


class BookingNotConfirmed(BookingError):
    """A refund of a booking that was never sold (or was cancelled without a refund)."""

    code = "booking_not_confirmed"

    def __init__(self, booking_id: str, status: str) -> None:
        super().__init__(f"booking {booking_id} is {status}: only a confirmed booking is "
                         "refunded", status=status)


class RefundClosed(BookingError):
    """A refund after the show's refund cut-off (`settings.refund_closes_before`)."""

    code = "refund_closed"

    def __init__(self, booking_id: str, closed_at: str) -> None:
        super().__init__(f"refunds of booking {booking_id} closed at {closed_at}",
                         booking_id=booking_id, closed_at=closed_at)


class HoldLimitReached(BookingError):
    """A per-user or per-address cap (seats held in one show, active holds in a region)."""

    code = "hold_limit_reached"

    def __init__(self, limit: str, maximum: int) -> None:
        what = {"seats_per_show": f"at most {maximum} seats held at once in one show",
                "holds_per_user": f"at most {maximum} active holds at once in this region",
                "seats_per_show_per_address": f"at most {maximum} seats held at once in one "
                                              "show from one client address",
                "holds_per_address": f"at most {maximum} active holds at once in this "
                                     "region from one client address"}
        super().__init__(f"limit reached: {what.get(limit, limit)}", limit=limit, max=maximum)


class RequestInProgress(BookingError):
    code = "in_progress"


class PaymentReused(BookingError):
    code = "payment_already_used"


class TransactionAborted(NodeError):
    """The home primary aborted the transaction instead of letting it wait: a deadlock
    victim, a lock wait past `lock_timeout` (rows held by a stalled session), or a
    statement past `statement_timeout`. It rolled back, so nothing changed: 503, not 409
    (the booking rules refused nothing) and not a 500 (no bug: retry in a moment)."""

    status = 503
    code = "transaction_aborted"
    RETRY_AFTER_S = 1

    def __init__(self, region: str, reason: str) -> None:
        super().__init__(f"home region {region} aborted this write ({reason}) so that it "
                         "would not wait on locks; nothing was changed, retry shortly",
                         region=region, reason=reason, retry_after_s=self.RETRY_AFTER_S)
        self.headers = {"Retry-After": str(self.RETRY_AFTER_S)}


class Overloaded(NodeError):
    """The node's write queue is full, or a write waited in it until too close to its
    deadline (`admission.py`). Nothing was done, so a retry is safe: 503 with Retry-After,
    not 429 (the caller exceeded no limit of its own)."""

    status = 503
    code = "overloaded"
    RETRY_AFTER_S = 1

    def __init__(self, why: str) -> None:
        super().__init__(f"this node is taking too many writes at once ({why}); nothing was "
                         "changed, retry shortly", outcome="not_applied",
                         retry_after_s=self.RETRY_AFTER_S)
        self.headers = {"Retry-After": str(self.RETRY_AFTER_S)}


class TheatreMoving(NodeError):
    """A move of the theatre froze its writes (`bookcluster topology move`): nothing was
    done; retry in a moment, when it lives at its new home. Reads keep working."""

    status = 503
    code = "theatre_moving"
    RETRY_AFTER_S = 1

    def __init__(self, region: str, target: str | None) -> None:
        super().__init__(f"this theatre is moving from {region} to {target or 'another region'}; "
                         "nothing was changed, retry shortly", outcome="not_applied",
                         region=region, target=target, retry_after_s=self.RETRY_AFTER_S)
        self.headers = {"Retry-After": str(self.RETRY_AFTER_S)}


class InvalidOnSale(RequestError):
    """An on-sale the operator asked for cannot be made as asked (`field` says why)."""

    code = "invalid_onsale"


class OnSaleConflict(BookingError):
    """A show is already under another on-sale, or the on-sale is not open yet."""

    code = "onsale_conflict"

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.code = code


class AdmissionRequired(Forbidden):
    """A hold on a show under an on-sale came without an admission pass: queue first."""

    code = "admission_required"

    def __init__(self, onsale_id: str) -> None:
        super().__init__(f"this show is on sale through a queue: join it at "
                         f"/onsales/{onsale_id}/join and hold with the pass it gives",
                         onsale=onsale_id, join_url=f"/onsales/{onsale_id}/join")


# The admission pass refusals (`onsales.py`), each its own code.
ADMISSION_REFUSALS = {
    "admission_forged": "the admission pass is malformed or its signature does not match",
    "admission_expired": "the admission pass's shopping window has ended",
    "admission_used": "the admission pass was used for another hold",
    "admission_not_yours": "the admission pass belongs to another user",
    "admission_wrong_show": "the admission pass is for another on-sale's shows",
    "admission_party_too_large": "the admission pass allows fewer seats in one hold",
}


class AdmissionRefused(Forbidden):
    def __init__(self, code: str, **details: Any) -> None:
        super().__init__(ADMISSION_REFUSALS[code], **details)
        self.code = code


class TicketRefused(Forbidden):
    """A queue ticket that is forged, or another user's or another on-sale's."""

    code = "ticket_invalid"


class TicketNotValid(RequestError):
    """At the door: a payload that is not a ticket we signed (`ticket_keys.verify`):
    malformed_ticket, unknown_key or bad_signature."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


CHECKIN_REFUSALS = {
    "already_admitted": "this ticket is inside already",
    "not_inside": "this ticket is not inside: nothing to let out",
    "no_reentry": "this theatre does not let a ticket in again once it went out",
    "not_confirmed": "this ticket's booking is not confirmed (cancelled or never paid)",
    "refunded": "this ticket's booking was refunded",
    "seats_mismatch": "this ticket's seats are not its booking's",
    "unknown_booking": "this show's home region has no such booking",
    "wrong_show": "this ticket is for another show",
    "outside_window": "this show is not open for check-in now",
}


class CheckinRefused(BookingError):
    """At the door: the ticket is genuine, but does not go in (or out) now."""

    def __init__(self, code: str, **details: Any) -> None:
        super().__init__(CHECKIN_REFUSALS[code], **details)
        self.code = code


class TicketUsed(BookingError):
    """A cancel or refund of a booking whose ticket was admitted at the door."""

    code = "ticket_used"

    def __init__(self, booking_id: str) -> None:
        super().__init__(f"booking {booking_id} was admitted at the door: it can no longer "
                         "be cancelled or refunded", booking_id=booking_id)
