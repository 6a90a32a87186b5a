"""The API's contract: the OpenAPI 3.1 document every node serves at `/openapi.json`.

Built in Python, not kept as YAML, so what must agree with the code comes from
the code (id patterns, the seat cap, region names: `schemas.py`). It cannot
drift: `tests/integration/node/test_openapi.py` fails when the router and this table
disagree on a route, or an operation's `security` on its handler's `access`,
and fuzzes a live node against the document (schemathesis).

Security: `[]` for routes anyone may call (public reads, health, the webhook,
which its HMAC signature authenticates); `bearerAuth` for user routes;
`bearerAuth: [operator]` (an OpenAPI 3.1 role) for operator routes.
"""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

from bookcluster.booking import ids
from bookcluster.booking.onsale_state import ONSALE_ID
from bookcluster.booking.passes import ADMISSION_HEADER, TICKET_HEADER
from bookcluster.booking.signing import SIGNATURE_HEADER
from bookcluster.errors import ADMISSION_REFUSALS, CHECKIN_REFUSALS
from bookcluster.node.checkin_schemas import checkin_components
from bookcluster.node.schemas import IDEMPOTENCY_KEY, USER_ID, Schema, components, pattern, ref
from bookcluster.topology.model import Topology

SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "none": [], "public": [], "user": [{"bearerAuth": []}],
    "operator": [{"bearerAuth": ["operator"]}],
}
WHY = {
    400: "Malformed id, header or signature", 401: "No valid bearer token (or webhook signature)",
    402: "The payment is not captured for this booking and amount", 403: "Not allowed",
    404: "No such theatre, show, booking or ticket", 409: "Refused by the booking rules",
    421: "MOVED: the theatre is not this region's to write at the node's topology epoch, "
         "and the node found no newer epoch to route by; nothing changed (`region`, `epoch`)",
    # 413: body over the node's size limit (`http_error` until the body-limit work lands).
    413: "Body too large", 422: "Invalid input", 429: "Rate limited; retry after `Retry-After` s",
    503: "The home region (or payment gateway) cannot answer now, or (`overloaded`) the "
         "home node's write queue is full. `outcome` says whether anything changed: "
         "`not_applied`, or `unknown` (retry with the same Idempotency-Key to learn it; a "
         "hold that may exist lapses by `lapses_by`)",
}
HEADERS = {  # by error code: a webhook's 401 (`bad_signature`) has no bearer challenge
    "unauthorized": {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
    "rate_limited": {"Retry-After": {"required": True, "description": "seconds",
                                     "schema": {"type": "integer", "minimum": 1}}},
    "region_unavailable": {"Retry-After": {"required": False, "description": "seconds",
                                           "schema": {"type": "integer", "minimum": 1}}},
    # Not required: a forwarded answer carries the body only.
    "transaction_aborted": {"Retry-After": {"required": False, "description": "seconds",
                                            "schema": {"type": "integer", "minimum": 1}}},
    "overloaded": {"Retry-After": {"required": False, "description": "seconds",
                                   "schema": {"type": "integer", "minimum": 1}}},
    "theatre_moving": {"Retry-After": {"required": False, "description": "seconds",
                                       "schema": {"type": "integer", "minimum": 1}}},
    "moved": {"Retry-After": {"required": False, "description": "seconds",
                              "schema": {"type": "integer", "minimum": 1}}},
}
RATE = ("rate_limited",)
REGION_DOWN = ("region_unavailable",)
# Routes that use the home primary: it may also abort a transaction rather than wait.
PRIMARY_DOWN = (*REGION_DOWN, "transaction_aborted")
# Writes run once the home node admits them (`admission.py`); a full queue sheds. A move
# freezes a theatre's writes for a moment (`theatre_moving`).
WRITE_DOWN = (*PRIMARY_DOWN, "overloaded", "theatre_moving")
MOVED = ("moved",)
BODY_TOO_LARGE = ("body_too_large", "http_error")
STATIC_TYPES = ("text/javascript", "text/css", "text/html", "image/svg+xml", "text/plain")


def json_content(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def error(status: int, codes: tuple[str, ...]) -> dict[str, Any]:
    schema = {"allOf": [ref("Error"), {"properties": {"error": {"enum": list(codes)}}}]}
    out: dict[str, Any] = {"description": WHY[status], "content": json_content(schema)}
    headers = {k: v for code in codes for k, v in HEADERS.get(code, {}).items()}
    if headers:
        out["headers"] = headers
    return out


def ok(description: str, schema: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = json_content(ref(schema))
    return out


def html(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"text/html": {"schema": {"type": "string"}}}}


def path_param(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema,
            "description": description}


def query(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def header(name: str, schema: Schema, description: str, *,
           required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "schema": schema,
            "description": description}


SHOW = path_param("show_id", pattern(ids.SHOW_ID), "a show id")
THEATRE = path_param("theatre_id", pattern(ids.THEATRE_ID), "a theatre id")
ONSALE = path_param("onsale_id", pattern(ONSALE_ID), "an on-sale id: `os<show id>-<8 hex>`")
ADMISSION = header(ADMISSION_HEADER, {"type": "string"}, "the admission pass, when the show "
                   "is under an on-sale (`/onsales/{onsale_id}/position`)", required=False)
ADMISSION_CODES = ("admission_required", *ADMISSION_REFUSALS)
HOLD_PARAMS = (SHOW, header("Idempotency-Key", IDEMPOTENCY_KEY,
                            "the client's key for this hold", required=False), ADMISSION)
BOOKING = path_param("booking_id", pattern(ids.BOOKING_ID),
                     "a booking id: `b<show id>-<16 hex>`, so any node finds its home region")


def operation(op_id: str, tag: str, access: str, summary: str, *,
              responses: dict[int, dict[str, Any]], errors: dict[int, tuple[str, ...]],
              params: tuple[dict[str, Any], ...] = (), body: str | None = None,
              body_required: bool = True,
              description: str | None = None) -> dict[str, Any]:
    """One operation. Token routes always may answer 401, operator routes 403, and
    public and token routes 429 (the read limits; an address sending bad tokens), so
    those are added here."""
    errors = dict(errors)
    if access in ("user", "operator"):
        errors.setdefault(401, ("unauthorized",))
        errors.setdefault(429, RATE)
    if access == "operator":
        errors.setdefault(403, ("forbidden",))
        description = (description or "") + " Needs a token with the `operator` role."
    if access == "public":
        errors.setdefault(429, RATE)
    out: dict[str, Any] = {
        "operationId": op_id, "tags": [tag], "summary": summary,
        "security": SECURITY[access],
        "responses": {str(s): r for s, r in sorted(
            {**responses, **{s: error(s, c) for s, c in errors.items()}}.items())},
    }
    if description:
        out["description"] = description.strip()
    if params:
        out["parameters"] = list(params)
    if body is not None:
        out["requestBody"] = {"required": body_required, "content": json_content(ref(body))}
    return out


def hold_errors(*conflicts: str) -> dict[int, tuple[str, ...]]:
    """What a hold (picked or best available) may answer besides 201: the same but for
    its 409 codes."""
    return {400: ("malformed_id",), 403: ADMISSION_CODES, 404: ("not_found",),
            409: conflicts, 413: BODY_TOO_LARGE,
            422: ("invalid_input", "idempotency_key_reused"), 429: RATE,
            421: MOVED, 503: WRITE_DOWN}


def paths() -> dict[str, dict[str, Any]]:
    return {
        "/healthz": {"get": operation(
            "healthz", "ops", "none", "Liveness: 200 while the process serves",
            responses={200: ok("Serving", "Health")}, errors={})},
        "/readyz": {"get": operation(
            "readyz", "ops", "none",
            "Readiness: this region's Redis master and PostgreSQL, and the node's "
            "subscription to each region's seat changes",
            responses={200: ok("Ready", "Readiness"),
                       503: {"description": "Not ready; `checks` says which check failed",
                             "content": json_content(ref("Readiness"))}}, errors={})},
        "/metrics": {"get": operation(
            "metrics", "ops", "none", "Prometheus metrics (text format 0.0.4)",
            responses={200: {"description": "Metrics",
                             "content": {"text/plain": {"schema": {"type": "string"}}}}},
            errors={})},
        "/openapi.json": {"get": operation(
            "openapi", "ops", "public", "This document",
            responses={200: {"description": "OpenAPI 3.1",
                             "content": json_content({"type": "object"})}}, errors={})},
        "/theatres": {"get": operation(
            "listTheatres", "catalog", "public", "Theatres, optionally of a city or region",
            params=(query("city", {"type": "string"}, "case-insensitive city name"),
                    query("region", {"type": "string"}, "home region")),
            responses={200: ok("Theatres", "TheatreList")}, errors={})},
        "/theatres/{theatre_id}/shows": {"get": operation(
            "theatreShows", "catalog", "public", "A theatre and its shows, with seats left",
            params=(THEATRE,), responses={200: ok("The theatre's shows", "TheatreShows")},
            errors={400: ("malformed_id",), 404: ("not_found",)})},
        "/shows/{show_id}": {"get": operation(
            "showDetail", "catalog", "public", "A show with its movie, screen and theatre",
            params=(SHOW,), responses={200: ok("The show", "ShowDetail")},
            errors={400: ("malformed_id",), 404: ("not_found",)})},
        "/shows/{show_id}/seats": {"get": operation(
            "showSeats", "catalog", "public", "The seat map",
            description="From the node's cache (`version`, `as_of` say how fresh), or the "
                        "home master with `consistent=true`.",
            params=(SHOW, query("consistent", {"enum": ["true", "false", "1", "0"]},
                                "read the home master (case-insensitive)")),
            responses={200: ok("The seat map", "SeatMap")},
            errors={400: ("malformed_id",), 404: ("not_found",), 422: ("invalid_input",),
                    503: REGION_DOWN})},
        "/shows/{show_id}/live": {"get": operation(
            "showLive", "catalog", "public", "WebSocket of seat changes",
            description="A `snapshot` (the seat map), then one `delta` per change with "
                        "consecutive versions; send `{\"type\": \"resync\"}` for a new "
                        "snapshot.",
            params=(SHOW,), responses={101: ok("Switching to the WebSocket protocol")},
            errors={400: ("malformed_id", "http_error"), 404: ("not_found",)})},
        "/booking/seats/{show_id}/lock": {"post": operation(
            "hold", "booking", "user", "Hold seats (all or none) for the token's user",
            description="Runs in the show's home region (another region's node forwards it). "
                        "With an `Idempotency-Key`, a retry returns the hold the first "
                        "attempt made (as it is now, header `Idempotent-Replayed: true`) "
                        "and never makes a second one. The answer names its booking in the "
                        "header `X-Bookcluster-Booking-Id` too.",
            params=HOLD_PARAMS,
            body="HoldRequest", responses={201: ok("Held", "Hold")},
            errors=hold_errors("seats_unavailable", "hold_limit_reached", "orphan_seat"))},
        "/booking/seats/{show_id}/best": {"post": operation(
            "holdBest", "booking", "user", "Hold the best seats free now (best available)",
            description="The show's home master chooses the best block of `count` free "
                        "seats (same row side by side, no orphan seat, nearest the screen's "
                        "sweet spot: docs/architecture.md) and holds it in one step; then "
                        "it is recorded and answered exactly as a hold (`seats`: the seats "
                        "chosen). With an `Idempotency-Key`, a retry returns the seats the "
                        "first attempt chose and never holds a second block.",
            params=HOLD_PARAMS,
            body="BestRequest", responses={201: ok("Held", "BestHold")},
            errors=hold_errors("no_block_available", "seats_unavailable",
                               "hold_limit_reached"))},
        "/booking/booking/{booking_id}/pay": {"post": operation(
            "pay", "booking", "user", "A payment intent at the gateway for the held amount",
            description="Asking again returns the same intent while it can still be paid. "
                        "With `return_url` (a web page's) a new intent is a hosted checkout: "
                        "the customer pays or declines at `checkout_url`, and the gateway "
                        "sends them back to `return_url` (`{PAYMENT_ID}` in it replaced).",
            params=(BOOKING,), body="PayRequest", body_required=False,
            responses={201: ok("The intent", "PaymentIntent")},
            errors={400: ("malformed_id",), 404: ("not_found",),
                    409: ("booking_not_pending",), 413: BODY_TOO_LARGE,
                    422: ("invalid_input",), 429: RATE,
                    421: MOVED, 503: WRITE_DOWN + ("payment_gateway_unavailable",)})},
        "/booking/booking/{booking_id}/confirm": {"post": operation(
            "confirm", "booking", "user", "Sell a held booking paid by a captured payment",
            description="Idempotent per `Idempotency-Key`: a retry gets the first answer "
                        "byte for byte; business refusals (409) are stored too.",
            params=(BOOKING, header("Idempotency-Key", IDEMPOTENCY_KEY,
                                    "the client's key for this confirm")),
            body="ConfirmRequest", responses={200: ok("Confirmed", "ConfirmedBooking")},
            errors={400: ("malformed_id", "missing_header"), 402: ("payment_required",),
                    404: ("not_found",),
                    409: ("seats_taken", "hold_expired", "booking_not_pending",
                          "payment_already_used"),
                    413: BODY_TOO_LARGE, 422: ("invalid_input", "idempotency_key_reused"),
                    429: RATE, 421: MOVED, 503: WRITE_DOWN + ("payment_gateway_unavailable",)})},
        "/booking/booking/{booking_id}/cancel": {"post": operation(
            "cancel", "booking", "user", "Cancel a held booking (idempotent); frees its seats",
            params=(BOOKING,), responses={200: ok("Cancelled", "BookingWithPayments")},
            errors={400: ("malformed_id",), 404: ("not_found",),
                    409: ("booking_not_pending", "ticket_used"), 429: RATE, 421: MOVED,
                    503: WRITE_DOWN})},
        "/booking/booking/{booking_id}/refund": {"post": operation(
            "refund", "booking", "user", "Refund a confirmed booking before its entry",
            description="The booking's owner, or a token with the `operator` role for any "
                        "booking. Only a CONFIRMED booking, before the show's refund "
                        "cut-off (`refund_closes_before`, default its start) and before its "
                        "ticket went in at the door: the booking becomes CANCELLED, its "
                        "seats are for sale again, its payment goes back (REFUND_PENDING, "
                        "then REFUNDED once the gateway refunded it) and its ticket is "
                        "refused at the door (`refunded`). Asked again (with or without "
                        "the same `Idempotency-Key`) it answers the same, with "
                        "`Idempotent-Replayed: true`.",
            params=(BOOKING, header("Idempotency-Key", IDEMPOTENCY_KEY,
                                    "optional; a retry answers the same with or without it",
                                    required=False)),
            responses={200: ok("Refunded", "RefundedBooking")},
            errors={400: ("malformed_id",), 404: ("not_found",),
                    409: ("ticket_used", "booking_not_confirmed", "refund_closed"),
                    422: ("invalid_input",), 429: RATE, 421: MOVED, 503: WRITE_DOWN})},
        "/booking/booking/{booking_id}/extend": {"post": operation(
            "extend", "booking", "user", "Extend a hold, never past `max_hold` from creation",
            params=(BOOKING,), responses={200: ok("Extended", "BookingWithPayments")},
            errors={400: ("malformed_id",), 404: ("not_found",),
                    409: ("booking_not_pending", "hold_expired"), 429: RATE,
                    421: MOVED, 503: WRITE_DOWN})},
        "/booking/booking/{booking_id}": {"get": operation(
            "getBooking", "booking", "user", "The caller's booking, with its payments",
            description="Another user's booking is 404: its existence is not revealed.",
            params=(BOOKING,), responses={200: ok("The booking", "BookingWithPayments")},
            errors={400: ("malformed_id",), 404: ("not_found",), 503: PRIMARY_DOWN})},
        "/booking/booking/{booking_id}/ticket": {"get": operation(
            "getTicket", "booking", "user", "The ticket PNG, drawn on its first download",
            params=(BOOKING,),
            responses={200: {"description": "The ticket (QR code with a signed reference)",
                             "content": {"image/png": {"schema": {}}}}},
            errors={400: ("malformed_id",), 404: ("not_found", "ticket_not_ready"),
                    409: ("booking_not_pending",), 503: PRIMARY_DOWN})},
        "/users/{user_id}/bookings": {"get": operation(
            "userBookings", "booking", "user", "A user's bookings; only that user may ask",
            params=(path_param("user_id", USER_ID, "must be the token's user"),),
            responses={200: ok("Newest first, from every region", "UserBookings")},
            errors={403: ("forbidden",)})},
        "/me/bookings": {"get": operation(
            "myBookings", "booking", "user", "The caller's bookings in every region",
            description="`unavailable_regions` names regions that did not answer.",
            responses={200: ok("Newest first, from every region", "UserBookings")},
            errors={})},
        "/payments/webhook": {"post": operation(
            "paymentWebhook", "payments", "none", "The gateway's signed payment event",
            description=f"Authenticated by `{SIGNATURE_HEADER}: t=<unix>,v1=<hex>`, "
                        "HMAC-SHA256(secret, \"<t>.\" + body), within the replay window. "
                        "Stored once by `event_id`; the home region's worker runs the saga. "
                        "An event naming no booking of a known show is stored in this node's "
                        "region, whose worker refunds a capture.",
            params=(header(SIGNATURE_HEADER, {"type": "string"}, "t=<unix>,v1=<hex HMAC>"),),
            body="PaymentEvent",
            responses={200: ok("Stored (or a duplicate)", "PaymentEventReceived")},
            errors={400: ("missing_signature", "malformed_signature", "stale_webhook",
                          "malformed_id"),
                    401: ("bad_signature",), 404: ("not_found",), 421: MOVED,
                    413: BODY_TOO_LARGE, 422: ("invalid_input",), 429: RATE,
                    503: PRIMARY_DOWN + ("theatre_moving",)})},
        "/tickets/keys": {"get": operation(
            "ticketKeys", "checkin", "public", "The public keys that verify signed tickets",
            description="A ticket's QR holds `BC1.<body>.<signature>` (Ed25519 over "
                        "`BC1.<body>`; `body` is base64url JSON naming its key id `k`). A gate "
                        "that holds these keys verifies a ticket offline; it cannot mint one. "
                        "Several keys are listed while keys rotate: verify with the one the "
                        "ticket names.",
            responses={200: ok("The keys", "TicketKeys")}, errors={})},
        "/checkin/scan": {"post": operation(
            "checkinScan", "checkin", "user", "Check a ticket in (or out) at a gate",
            description="Needs a token with the `scanner` role whose `theatres` claim names "
                        "the show's theatre (403 otherwise). At the show's home region "
                        "(forwarded there): the signature is verified, the show checked (the "
                        "gate's `show_id` if given; the check-in window around its start), "
                        "and the scan recorded in one transaction. The first entry answers "
                        "`admitted` with the seats; the same nonce again answers the same; "
                        "a second entry with another nonce is 409 `already_admitted` with "
                        "`prior_at` and `prior_gate`. `direction: out` lets a ticket out; it "
                        "may come in again unless its theatre forbids re-entry.",
            body="ScanRequest", responses={200: ok("Admitted or let out", "Scan")},
            errors={400: ("malformed_ticket", "unknown_key", "bad_signature"),
                    403: ("forbidden",), 409: tuple(CHECKIN_REFUSALS), 413: BODY_TOO_LARGE,
                    422: ("invalid_input",), 429: RATE, 421: MOVED, 503: WRITE_DOWN})},
        "/checkin/batch": {"post": operation(
            "checkinBatch", "checkin", "user", "Upload the scans a gate made offline",
            description="Applied in order, each as a scan made at its `scanned_at`. The gate "
                        "already let its bearers through: a second entry is recorded and "
                        "reported in `entered_twice` (both scans, both gates), never hidden; "
                        "a scan the rules refuse is reported with its refusal. All scans "
                        "belong to one home region (that of the first; others answer "
                        "`other_region`). Needs a `scanner` token for the scans' theatres.",
            body="BatchRequest", responses={200: ok("Every scan's result", "BatchResult")},
            errors={400: ("malformed_ticket", "unknown_key", "bad_signature"),
                    403: ("forbidden",), 413: BODY_TOO_LARGE, 422: ("invalid_input",),
                    429: RATE, 421: MOVED, 503: WRITE_DOWN})},
        "/onsales": {"get": operation(
            "listOnSales", "onsale", "public", "Every on-sale, from this region's replicas",
            description="`unavailable_regions` names regions whose replica did not answer.",
            responses={200: ok("On-sales, by sale_at", "OnSaleList")}, errors={})},
        "/onsales/{onsale_id}/join": {"post": operation(
            "joinOnSale", "onsale", "user", "Join an on-sale's queue: a signed queue ticket",
            description="At the on-sale's home region (forwarded there). One place per user: "
                        "joining again returns the same ticket (`joined_before`). Joins "
                        "before `sale_at` get a uniformly random place when the sale starts; "
                        "later joins queue in arrival order behind them. Within the write "
                        "rate limits per user and client address.",
            params=(ONSALE,), responses={200: ok("The ticket and position", "QueueTicket")},
            errors={400: ("malformed_id",), 403: ("ticket_invalid",), 404: ("not_found",),
                    409: ("onsale_not_open",), 429: RATE, 503: WRITE_DOWN})},
        "/onsales/{onsale_id}/position": {"get": operation(
            "onSalePosition", "onsale", "user", "The caller's place in an on-sale's queue",
            description="Answered from this region's replica of the home master (no round "
                        "trip to the home region). `state` `admitted` carries the admission "
                        "`pass` and the end of its shopping window.",
            params=(ONSALE, header(TICKET_HEADER, {"type": "string"},
                                   "the ticket from the join (or `?ticket=`)", required=False),
                    query("ticket", {"type": "string"}, "the ticket from the join")),
            responses={200: ok("The position", "QueuePosition")},
            errors={400: ("malformed_id",), 403: ("ticket_invalid",), 404: ("not_found",),
                    503: REGION_DOWN})},
        "/onsales/{onsale_id}/live": {"get": operation(
            "onSaleLive", "onsale", "public", "WebSocket of the caller's place in the queue",
            description="The queue ticket from the join (`?ticket=`) says whose place. First "
                        "a `position` message (the position's answer), then whenever the "
                        "queue moves one `queue` message (`admitted`, `joined`, "
                        "`rate_per_s`, `sold_out`, `sealed`) shared by every socket of the "
                        "on-sale, or the caller's own `position` when their state changes "
                        "(their place drawn, `admitted` with the `pass`, `sold_out`). Served "
                        "from this region's replica of the home master; a socket the node "
                        "cannot serve is closed (1011): poll the position instead.",
            params=(ONSALE, query("ticket", {"type": "string"}, "the ticket from the join")),
            responses={101: ok("Switching to the WebSocket protocol")},
            errors={400: ("malformed_id", "http_error"), 403: ("ticket_invalid",),
                    404: ("not_found",)})},
        "/ops/onsales": {"post": operation(
            "createOnSale", "ops", "operator", "Open an on-sale for shows of one home region",
            description="From then on a hold on its shows needs an admission pass (403 "
                        "`admission_required` names the queue). All shows must share one "
                        "home region (400 `invalid_onsale` otherwise); a show is under at "
                        "most one on-sale (409 `onsale_exists`).",
            body="OnSaleRequest", responses={201: ok("Opened", "OnSale")},
            errors={400: ("invalid_onsale",), 409: ("onsale_exists",),
                    413: BODY_TOO_LARGE, 422: ("invalid_input",), 503: PRIMARY_DOWN})},
        "/ops/headcounts": {"get": operation(
            "headCounts", "ops", "operator", "Head counts of shows: sold, admitted, inside now",
            description="Per show, read at its home region: seats sold, seats admitted at "
                        "the door (ever) and seats inside now (admitted and not gone out). "
                        "Name shows (`show`, repeatable) or a theatre's shows (`theatre`); "
                        "at most 50.",
            params=(query("show", pattern(ids.SHOW_ID), "a show (repeatable)"),
                    query("theatre", pattern(ids.THEATRE_ID), "a theatre's shows")),
            responses={200: ok("The counts", "HeadCounts")},
            errors={400: ("malformed_id",), 404: ("not_found",), 422: ("invalid_input",),
                    503: REGION_DOWN})},
        "/ops/jobs": {"get": operation(
            "jobCounts", "ops", "operator", "Job queue depth per region and state",
            responses={200: ok("Counts", "JobCounts")}, errors={})},
        "/ops/jobs/replay": {"post": operation(
            "replayJobs", "ops", "operator", "Put a region's dead-lettered jobs back in its queue",
            description="All of them, or only `job_ids`.", body="ReplayRequest",
            responses={200: ok("How many went back", "Replayed")},
            errors={413: BODY_TOO_LARGE, 422: ("invalid_input",)})},
        "/ops/seat-cache": {"get": operation(
            "seatCache", "ops", "operator", "What this node's seat cache holds",
            description="Per cached show its mirror generation, version and a digest of its "
                        "seat statuses (`bookcluster audit` compares them with PostgreSQL); "
                        "with `show`, that show only, with `seats`: every seat that is not "
                        "AVAILABLE now, and its status.",
            params=(query("show", pattern(ids.SHOW_ID), "one show, with its statuses"),),
            responses={200: ok("The cached shows", "SeatCache")},
            errors={400: ("malformed_id",)})},
        "/ops/overview": {"get": operation(
            "clusterOverview", "ops", "operator", "The whole cluster's health, probed now",
            description="Every region's Redis master and replicas (role, link, lag in bytes "
                        "behind the source master), PostgreSQL primary and standby (role, "
                        "standby lag in bytes), nodes (`/readyz`), worker (queue depth, "
                        "outbox backlog, mirror generation), the topology epoch and the last "
                        "audit; each probe within about a second, so a stopped server shows "
                        "as down (`up: false`, `error`). `moves`: the latest theatre moves "
                        "(`bookcluster topology move`) with their step, freeze and size; "
                        "failovers are not recorded yet (`available: false`).",
            responses={200: ok("The overview", "ClusterOverview")}, errors={})},
        "/ops/topology": {"post": operation(
            "adoptTopology", "ops", "operator", "Route by another topology epoch, now",
            description="The epoch as applied to this region's PostgreSQL by `bookcluster "
                        "topology apply` or `topology move` (an older one when an apply "
                        "rolls back). Routing changes live (the theatre map, regions and "
                        "their nodes); a change of a kept region's stores needs a restart "
                        "(409 `topology_refused`, nothing changed).",
            body="TopologyEpoch", responses={200: ok("Now routing by it", "AdoptedTopology")},
            errors={409: ("topology_refused",), 413: BODY_TOO_LARGE,
                    422: ("invalid_input",), 503: ("region_unavailable",)})},
        "/": {"get": operation(
            "bookingPage", "web", "public", "The booking web page (HTML)",
            responses={200: html("The page")}, errors={})},
        "/ops": {"get": operation(
            "operatorPage", "web", "public", "The operator web page (HTML)",
            description="The page is public; the data it shows needs an operator token.",
            responses={200: html("The page")}, errors={})},
        "/scan": {"get": operation(
            "scannerPage", "web", "public", "The door scanner web page (HTML)",
            description="Reads tickets' QR codes with the camera and checks them in "
                        "(`POST /checkin/scan`, offline: `POST /checkin/batch`); the page is "
                        "public, its scans need a scanner token.",
            responses={200: html("The page")}, errors={})},
        "/static/{name}": {"get": operation(
            "staticFile", "web", "public", "A file of the web pages (JavaScript, CSS, licences)",
            params=(path_param("name", {"type": "string"}, "a file name, e.g. `book.js`"),),
            responses={200: {"description": "The file", "content": {
                t: {"schema": {"type": "string"}} for t in STATIC_TYPES}}},
            errors={404: ("not_found",)})},
        "/auth/dev-sign-in": {"post": operation(
            "devSignIn", "web", "public", "Development sign-in: a token for any user name",
            description="Only on nodes of the local cluster bound to loopback (`bookcluster "
                        "up` starts them with --dev-sign-in); 404 otherwise. Anyone who can "
                        "reach such a node gets any "
                        "user's token, the operator role included: never on a real "
                        "deployment, whose users sign in at its identity provider.",
            body="DevSignIn", responses={200: ok("A token", "DevToken")},
            errors={404: ("not_found",), 413: BODY_TOO_LARGE, 422: ("invalid_input",)})},
    }


def document(topology: Topology) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "bookcluster", "version": metadata.version("bookcluster"),
            "description": "Region-sharded movie-ticket booking: no seat is ever sold twice. "
                           "Every node answers every route. Errors are JSON "
                           "`{\"error\": code, \"message\": ..., ...details}`.",
        },
        "tags": [{"name": "catalog"}, {"name": "booking"}, {"name": "onsale"},
                 {"name": "checkin"},
                 {"name": "payments"},
                 {"name": "ops"}, {"name": "web"}],
        "paths": paths(),
        "components": {
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "A JWT whose `sub` is the user id; `roles` may hold "
                               "`operator` or `scanner` (then `theatres` names the "
                               "theatres it may check in). `exp` is required."}},
            "schemas": {**components(topology), **checkin_components()},
        },
    }


def document_bytes(topology: Topology) -> bytes:
    """The document as served: rendered once per node, at start-up."""
    return json.dumps(document(topology), indent=1).encode()
