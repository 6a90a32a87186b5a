"""The OpenAPI components of check-in at the door (`booking/checkin.py`)."""

from __future__ import annotations

from bookcluster.booking import checkin, ticket_keys
from bookcluster.errors import CHECKIN_REFUSALS
from bookcluster.node.schemas import BOOLEAN, COUNT, SHOW_ID, STRING, TIME, Schema, closed, ref

NULLABLE_TIME: Schema = {"type": ["string", "null"], "format": "date-time"}
NULLABLE_STRING: Schema = {"type": ["string", "null"]}
OUTCOMES = sorted(checkin.PASSED | set(CHECKIN_REFUSALS))
SCAN_FIELDS: dict[str, Schema] = {
    "payload": {"type": "string", "minLength": 1, "maxLength": ticket_keys.MAX_PAYLOAD,
                "description": "the QR's text: a signed ticket, or an older ticket reference"},
    "nonce": {"type": "string", "pattern": checkin.NONCE.pattern,
              "description": "the gate's, new for every scan; a retry sends the same one"},
    "gate": {"type": "string", "pattern": checkin.GATE.pattern},
}
SCAN_OPTIONAL: dict[str, Schema] = {
    "direction": {"enum": ["in", "out"], "default": "in"},
    "show_id": {"type": ["integer", "null"], "minimum": 1,
                "description": "the show this gate admits to (a ticket of another: 409 "
                               "`wrong_show`)"},
    "scanned_at": NULLABLE_TIME,
}
SCAN_ANSWER: dict[str, Schema] = {
    "outcome": {"enum": OUTCOMES}, "replayed": BOOLEAN, "booking_id": STRING,
    "ticket_id": STRING, "show_id": SHOW_ID, "theatre_id": STRING, "screen": STRING,
    "seat_ids": {"type": "array", "items": STRING}, "direction": {"enum": ["in", "out"]},
    "nonce": STRING, "gate": NULLABLE_STRING, "scanned_at": NULLABLE_TIME,
    "prior_at": NULLABLE_TIME, "prior_gate": NULLABLE_STRING,
}


def checkin_components() -> dict[str, Schema]:
    return {
        "TicketKeys": closed({
            "algorithm": {"const": ticket_keys.ALGORITHM}, "format": STRING,
            "keys": {"type": "array", "items": closed({
                "key_id": STRING, "region": STRING,
                "public_key": {"type": "string",
                               "description": "the raw 32-byte Ed25519 key, base64url"},
                "current": BOOLEAN})}}),
        "ScanRequest": closed(SCAN_FIELDS, SCAN_OPTIONAL),
        "BatchRequest": closed({"scans": {
            "type": "array", "minItems": 1, "maxItems": checkin.MAX_BATCH,
            "items": closed({**SCAN_FIELDS, "scanned_at": TIME},
                            {k: v for k, v in SCAN_OPTIONAL.items() if k != "scanned_at"})}}),
        "Scan": closed(SCAN_ANSWER, {"booking_status": STRING}),
        "BatchResult": closed({
            # An item is a Scan, or a refusal (the error body with its nonce and gate).
            "results": {"type": "array", "items": {
                "type": "object", "required": ["nonce", "gate", "outcome"],
                "properties": {"outcome": STRING, "nonce": STRING, "gate": STRING}}},
            "entered_twice": {"type": "array", "items": closed({
                "booking_id": STRING, "ticket_id": NULLABLE_STRING,
                "first": closed({"gate": NULLABLE_STRING, "at": NULLABLE_TIME}),
                "second": closed({"gate": NULLABLE_STRING, "at": NULLABLE_TIME,
                                  "nonce": STRING})})}}),
        "HeadCounts": closed({"shows": {"type": "array", "items": ref("HeadCount")}}),
        "HeadCount": closed({"show_id": SHOW_ID, "sold": COUNT, "admitted": COUNT,
                             "inside": COUNT}),
    }
