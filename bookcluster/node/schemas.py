"""JSON schemas of the API's bodies, the data half of the OpenAPI document (`openapi.py`).

Response objects are closed (`additionalProperties: false`), so a field added to
an answer without adding it here fails the contract test. Error bodies stay open:
their details vary by error. The booking bodies (hold, confirm, pay, the webhook's
event, a booking and a hold) are generated from their models (`booking/models.py`,
`from_models`); id patterns come from `ids.py`, the seat cap from the topology, so
none of them can disagree with the code that checks them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from bookcluster.booking import ids, models
from bookcluster.booking.ids import IDEMPOTENCY_KEY as KEY_PATTERN
from bookcluster.booking.ids import MAX_KEY_LENGTH
from bookcluster.booking.onsale_state import ONSALE_ID as ONSALE_ID_RE
from bookcluster.stores.jobqueue import COUNT_STATES
from bookcluster.topology.model import Topology

Schema = dict[str, Any]

SEAT_STATUSES = ("AVAILABLE", "LOCKED", "BOOKED", "UNAVAILABLE")
INTENT_STATUSES = ("PENDING", "CAPTURED", "FAILED", "REFUNDED")


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def closed(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """An object with exactly these properties (`required` always present)."""
    return {"type": "object", "required": list(required),
            "properties": {**required, **(optional or {})}, "additionalProperties": False}


def pattern(regex: Any) -> Schema:
    return {"type": "string", "pattern": regex.pattern}


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
COUNT: Schema = {"type": "integer", "minimum": 0}
TIME: Schema = {"type": "string", "format": "date-time"}
THEATRE_ID = pattern(ids.THEATRE_ID)
SHOW_ID: Schema = {"type": "integer", "minimum": 1}
BOOKING_ID = pattern(ids.BOOKING_ID)
SEAT_ID = pattern(ids.SEAT_ID)
USER_ID = pattern(ids.USER_ID)

THEATRE = closed({"id": THEATRE_ID, "name": STRING, "address": STRING, "city": STRING,
                  "state": STRING, "region": STRING,
                  "timezone": {"type": "string", "description": "IANA time zone of its "
                               "shows' local times, e.g. Asia/Kolkata"}})
SHOW_FIELDS: dict[str, Schema] = {
    "id": SHOW_ID, "theatre_id": THEATRE_ID, "region": STRING,
    "screen": closed({"id": STRING, "name": STRING}),
    "movie": closed({"id": STRING, "title": STRING, "language": STRING,
                     "certificate": STRING, "duration_min": COUNT}),
    "starts_at": TIME,
}
BOOLEAN: Schema = {"type": "boolean"}
AVAILABILITY = closed({"seats_left": COUNT, "seats_total": COUNT, "filling_fast": BOOLEAN,
                       "sold_out": BOOLEAN})
SEAT = closed({"seat_id": SEAT_ID, "row": STRING, "number": COUNT, "category": STRING,
               "price_paise": COUNT, "position": COUNT, "accessible": BOOLEAN,
               "status": {"enum": list(SEAT_STATUSES)}})
# Every error body; `error` is narrowed to the codes each response can carry.
ERROR: Schema = {
    "type": "object", "required": ["error", "message"],
    "properties": {
        "error": STRING, "message": STRING,
        "field": {"type": "string", "description": "the input at fault"},
        "seats": {"type": "array", "items": STRING, "description": "the seats at fault"},
        "id": {"type": ["string", "integer"], "description": "the id not found or malformed"},
        "status": {"type": "string", "description": "the booking's status"},
        "limit": {"type": ["string", "integer"], "description": "the limit reached"},
        "max": INTEGER, "retry_after_s": {"type": "integer", "minimum": 1},
        "reason": {"enum": ["expired", "invalid", "deadlock", "lock_timeout",
                            "statement_canceled", "other_theatre"],
                   "description": "why a token was refused (401; 403 `other_theatre`: a "
                                  "scanner's token for other theatres), or why the home "
                                  "primary aborted the transaction (503 `transaction_aborted`)"},
        "region": {"type": ["string", "null"],
                   "description": "the home region that did not answer or aborted; for 421 "
                                  "`moved`, the theatre's owner (null: the answering region, "
                                  "at a newer `epoch`)"},
        "epoch": {"type": "integer", "description": "421 `moved`: the owner's epoch"},
        "target": {"type": ["string", "null"],
                   "description": "503 `theatre_moving`: where it is moving"},
        "header": STRING, "payment_id": STRING, "payment_status": STRING,
        "amount_paise": INTEGER, "hold_deadline": TIME,
        "error_id": {"type": "string", "description": "also in the node's log"},
    },
    "additionalProperties": True,
}


def _probe(**fields: Schema) -> Schema:
    """One process in the operator overview: `up`, or `up: false` with the `error`."""
    return closed({"address": STRING, "up": BOOLEAN}, {"error": STRING, **fields})


EPOCH: Schema = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
NOT_RECORDED = closed({"available": {"const": False}, "note": STRING})
LSN_OR_OFFSET: Schema = {"type": ["integer", "null"], "minimum": 0}
OVERVIEW_REGION = closed({
    "redis_master_now": {"oneOf": [closed({"up": BOOLEAN}, {
        "address": STRING, "sentinel": STRING, "error": STRING}), {"type": "null"}],
        "description": "the region's Redis master as the sentinels name it now"},
    # The slot started as the master; after a failover it may lag as a replica.
    "redis_master": _probe(role=STRING, offset=LSN_OR_OFFSET, lag_bytes=COUNT),
    "redis_replicas": {"type": "array", "items": _probe(
        source=STRING, role=STRING, link=STRING, offset=LSN_OR_OFFSET, lag_bytes=COUNT)},
    "postgres": {"type": "array", "description": "every member as it is now (Patroni's "
                 "role, else the server's), lag on the one that lags", "items": _probe(
                     role=STRING, lsn=LSN_OR_OFFSET, lag_bytes=COUNT,
                     member={"type": ["string", "null"]},
                     role_now={"type": ["string", "null"]})},
    "pg_primary": _probe(role=STRING, lsn=LSN_OR_OFFSET),
    "pg_standby": {"oneOf": [_probe(role=STRING, lsn=LSN_OR_OFFSET, lag_bytes=COUNT),
                             {"type": "null"}]},
    "nodes": {"type": "array", "items": _probe(ready=BOOLEAN, checks={"type": "object"})},
    "worker": {"oneOf": [_probe(queue={"type": "object", "additionalProperties": COUNT},
                                outbox_pending=COUNT, mirror_generation=COUNT),
                         {"type": "null"}]},
})


def from_models(cap: int) -> dict[str, Schema]:
    """The bodies' components, generated from `booking/models.py`: objects closed, as
    every object of this document; a hold's seat cap is the topology's."""
    _, generated = msgspec.json.schema_components(
        models.MODELS, ref_template="#/components/schemas/{name}")
    for schema in generated.values():
        schema.pop("title", None)
        if schema.get("type") == "object":
            schema["additionalProperties"] = False
    generated["HoldRequest"]["properties"]["seat_ids"]["maxItems"] = cap
    generated["BestRequest"]["properties"]["count"]["maximum"] = cap
    return generated


ONSALE_ID = pattern(ONSALE_ID_RE)
NUMBER_OR_NULL: Schema = {"type": ["number", "null"], "minimum": 0}
COUNT_OR_NULL: Schema = {"type": ["integer", "null"], "minimum": 0}
ONSALE = closed({"id": ONSALE_ID, "shows": {"type": "array", "items": SHOW_ID},
                 "opens_at": TIME, "sale_at": TIME, "window_s": COUNT, "max_party": COUNT,
                 "region": STRING, "join_url": STRING})
QUEUE_POSITION: dict[str, Schema] = {
    "onsale": ONSALE_ID, "sale_at": TIME,
    "state": {"enum": ["waiting", "admitted", "expired", "sold_out"]},
    "place": {"type": ["integer", "null"], "minimum": 1,
              "description": "1 is the first; null until the sale starts (early joiners' "
                             "places are drawn then)"},
    "ahead": COUNT_OR_NULL, "admitted": COUNT, "joined": COUNT_OR_NULL,
    "estimated_wait_s": NUMBER_OR_NULL, "rate_per_s": {"type": "number", "minimum": 0},
}
QUEUE_SUMMARY = closed({
    "joined": COUNT, "admitted": COUNT,
    "waiting": {**COUNT, "description": "joined, not admitted yet"},
    "rate_per_s": {"type": "number", "minimum": 0}, "sold_out": BOOLEAN,
    "sealed": {**BOOLEAN, "description": "the early joiners' order is drawn (the sale started)"},
    "last_wait_s": {**NUMBER_OR_NULL, "description": "estimated wait of the last in line at "
                                                     "the current rate (null: paused)"},
    "wait_p50_s": {**NUMBER_OR_NULL, "description": "median wait of the users admitted so "
                                                    "far, from the sale's start (early "
                                                    "joiners) or their join (null: none yet)"},
    "wait_p99_s": {**NUMBER_OR_NULL, "description": "99th percentile of the same"},
    "abandoned": {**COUNT, "description": "admitted users whose shopping window ended "
                                          "without a hold"}})
POSITION_MORE: dict[str, Schema] = {
    "poll_after_s": {"type": "number", "minimum": 0,
                     "description": "poll again after this long (absent: the state is final)"},
    "pass": {"type": "string", "description": "the admission pass (state admitted): send it "
                                              "with the hold as X-Bookcluster-Admission"},
    "window_ends_at": TIME,
}


def onsale_components(cap: int) -> dict[str, Schema]:
    return {
        "OnSale": ONSALE,
        "OnSaleListed": closed({**ONSALE["properties"], "queue": QUEUE_SUMMARY}),
        "OnSaleList": closed({"onsales": {"type": "array", "items": ref("OnSaleListed")},
                              "unavailable_regions": {"type": "array", "items": STRING}}),
        "OnSaleRequest": closed(
            {"shows": {"type": "array", "items": SHOW_ID, "minItems": 1, "maxItems": 50},
             "opens_at": TIME, "sale_at": TIME},
            {"window_s": {"type": "integer", "minimum": 60, "maximum": 3600},
             "max_party": {"type": "integer", "minimum": 1, "maximum": cap}}),
        "QueuePosition": closed(QUEUE_POSITION, POSITION_MORE),
        "QueueTicket": closed({**QUEUE_POSITION, "ticket": STRING,
                               "joined_before": BOOLEAN}, POSITION_MORE),
    }


def components(topology: Topology) -> dict[str, Schema]:
    cap = topology.settings.max_seats_per_booking
    regions = list(topology.regions)
    return {
        **onsale_components(cap),
        "Error": ERROR,
        "Health": closed({"status": {"const": "ok"}, "node": STRING, "region": STRING,
                          "epoch": EPOCH}),
        "TopologyEpoch": closed({"epoch": EPOCH}),
        "AdoptedTopology": closed({"node": STRING, "region": STRING, "epoch": EPOCH}),
        "Readiness": closed({
            "ready": BOOLEAN, "region": STRING,
            "checks": closed({"redis": STRING, "postgres": STRING, "listener": {
                "type": "object", "additionalProperties": STRING,
                "description": "per source region: ok, or since when its seat-change "
                               "subscription is down and why"}}),
            "listeners": {"type": "object", "additionalProperties": closed({
                "subscribed": BOOLEAN, "since": TIME, "restarts": COUNT,
                "last_change_s": {"type": ["number", "null"], "minimum": 0,
                                  "description": "seconds since its last change message"},
            })},
        }),
        "Theatre": THEATRE,
        "TheatreList": closed({"theatres": {"type": "array", "items": ref("Theatre")},
                               "count": COUNT}),
        "Availability": AVAILABILITY,
        "Show": closed(SHOW_FIELDS),
        "ShowDetail": closed({**SHOW_FIELDS, "theatre": ref("Theatre")}),
        "TheatreShows": closed({
            "theatre": ref("Theatre"),
            "shows": {"type": "array", "items": closed({
                **SHOW_FIELDS,
                "availability": {"oneOf": [ref("Availability"), {"type": "null"}],
                                 "description": "null when the home region cannot say now"},
            })},
        }),
        "Seat": SEAT,
        "SeatMap": closed({
            "show_id": SHOW_ID, "region": STRING, "version": COUNT, "as_of": TIME,
            "source": {"type": "string", "description": "`master` or `cache@<region>`"},
            "counts": {"type": "object", "propertyNames": {"enum": list(SEAT_STATUSES)},
                       "additionalProperties": COUNT},
            "seats": {"type": "array", "items": ref("Seat")},
        }),
        **from_models(cap),
        "UserBookings": closed({"user_id": USER_ID,
                                "bookings": {"type": "array", "items": ref("Booking")},
                                "unavailable_regions": {"type": "array", "items": STRING}}),
        "PaymentIntent": closed({"payment_id": STRING, "booking_id": BOOKING_ID,
                                 "amount_paise": COUNT,
                                 "status": {"enum": list(INTENT_STATUSES)},
                                 "checkout_url": {"type": "string", "format": "uri"}}),
        "PaymentEventReceived": closed({"received": {"const": True},
                                        "duplicate": BOOLEAN,
                                        "event_id": STRING, "region": STRING}),
        "JobCounts": closed({"regions": {
            "type": "object", "propertyNames": {"enum": regions},
            "additionalProperties": {"type": "object",
                                     "propertyNames": {"enum": list(COUNT_STATES)},
                                     "additionalProperties": COUNT}}}),
        "ReplayRequest": closed({"region": {"enum": regions}},
                                {"job_ids": {"type": "array", "items": STRING,
                                             "maxItems": 1000}}),
        "Replayed": closed({"region": {"enum": regions}, "replayed": COUNT}),
        "ClusterOverview": closed({
            "at": TIME, "node": STRING, "epoch": {"type": "integer", "minimum": 1},
            "regions": {"type": "object", "propertyNames": {"enum": regions},
                        "additionalProperties": OVERVIEW_REGION},
            "failovers": {"oneOf": [NOT_RECORDED, closed({
                "available": {"const": True}, "unreachable": {"type": "array",
                                                              "items": STRING},
                "items": {"type": "array", "items": closed({
                    "store": {"enum": ["redis", "postgres"]}, "region": STRING, "at": TIME,
                    "kind": {"enum": ["promoted", "restarted"]},
                    "to": {"type": ["string", "null"],
                           "description": "the new master's address (Redis) or leader "
                                          "member (PostgreSQL)"}},
                    {"from": STRING, "generation": COUNT, "timeline": COUNT,
                     "reason": STRING})}})]},
            "moves": {"oneOf": [NOT_RECORDED, closed({
                "available": {"const": True}, "unreachable": {"type": "array",
                                                              "items": STRING},
                "items": {"type": "array", "items": closed({
                    "theatre": STRING, "source": STRING, "target": STRING,
                    "from_epoch": EPOCH, "to_epoch": EPOCH,
                    "step": {"enum": ["frozen", "committed", "flipped", "done", "aborted"]},
                    "started_at": TIME, "updated_at": TIME,
                    "freeze_s": {"type": ["number", "null"]},
                    "rows": {"type": ["integer", "null"]},
                    "holds": {"type": ["integer", "null"]}})}})]},
            "audit": {"oneOf": [NOT_RECORDED, {
                "type": "object", "required": ["available", "finished_at", "exit_code"],
                "properties": {"available": {"const": True}, "finished_at": TIME,
                               "exit_code": {"enum": [0, 1, 2]},
                               "violations": COUNT},
                "description": "the summary `bookcluster audit` left in the run folder"}]}}),
        "DevSignIn": closed({"user": USER_ID},
                            {"roles": {"type": "array", "items": {"const": "operator"}}}),
        "DevToken": closed({"token": STRING, "user": USER_ID,
                            "roles": {"type": "array", "items": {"const": "operator"}},
                            "expires_at": TIME}),
        "SeatCache": closed({
            "node": STRING, "region": STRING,
            "at_ms": {**COUNT, "description": "the node's clock when it read its cache"},
            "shows": {"type": "array", "items": closed({
                "show_id": SHOW_ID, "region": {"type": ["string", "null"]},
                "generation": {**COUNT, "description": "the home master's mirror generation "
                                                       "(version >> 32)"},
                "version": COUNT, "as_of": TIME,
                "digest": {"type": "string", "description": "of `seats` as `seatstate.digest` "
                                                            "computes it"},
            }, {"seats": {"type": "object", "propertyNames": SEAT_ID,
                          "additionalProperties": {"enum": list(SEAT_STATUSES[1:])}}})},
        }),
    }


IDEMPOTENCY_KEY: Schema = {**pattern(KEY_PATTERN), "minLength": 1, "maxLength": MAX_KEY_LENGTH}
