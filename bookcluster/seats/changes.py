"""Seat change messages as masters publish them, checked before anything uses one.

A message is JSON `{show, version, seats, status[, booking][, expires_at][, ts]}`
(see `scripts.py`; `bookcluster/ops/reset.py` publishes RESET). Anyone who can
PUBLISH on a master or replica can put anything on the channel, so the
listener parses every message with `parse_change` and skips what fails,
instead of letting a KeyError or a float overflow end its loop.
"""

from __future__ import annotations

import json
from typing import Any

STATUSES = frozenset({"LOCKED", "AVAILABLE", "BOOKED", "RESET"})
# Ids, versions and millisecond clocks are int64 in Redis; anything bigger is garbage
# (and `int / 1000` of a 400-digit int overflows a float).
MAX_INT = (1 << 63) - 1


class MalformedChange(ValueError):
    """A message on the change channel that is not a seat change. `reason` is a
    label from a small fixed set (it is a metric label): not_json, not_object,
    missing, bad_type, out_of_range."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _int(message: dict[str, Any], name: str, low: int) -> int:
    value = message[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedChange("bad_type", f"{name} is {type(value).__name__}, not int")
    if not low <= value <= MAX_INT:
        raise MalformedChange("out_of_range", f"{name} not in [{low}, 2**63)")
    return value


def parse_change(data: bytes | str) -> dict[str, Any]:
    """The change in `data`, with its fields checked; extra fields are kept as they are.
    Raises MalformedChange."""
    try:
        message = json.loads(data)
    except (ValueError, RecursionError) as exc:  # also bad UTF-8, 5000-digit ints, deep nests
        raise MalformedChange("not_json", type(exc).__name__) from None
    if not isinstance(message, dict):
        raise MalformedChange("not_object", f"a JSON {type(message).__name__}")
    status = message.get("status")
    required = ("show", "version", "seats", "status") + (("expires_at",) if status == "LOCKED"
                                                        else ())
    missing = [name for name in required if name not in message]
    if missing:
        raise MalformedChange("missing", ", ".join(missing))
    if not isinstance(status, str) or status not in STATUSES:
        raise MalformedChange("bad_type", f"status {str(status)[:20]!r}")
    seats = message["seats"]
    if seats == {}:  # cjson encodes an empty Lua table as an object
        seats = []
    if not isinstance(seats, list) or not all(isinstance(s, str) for s in seats):
        raise MalformedChange("bad_type", "seats is not a list of strings")
    if not isinstance(message.get("booking", ""), str):
        raise MalformedChange("bad_type", "booking is not a string")
    change = {**message, "show": _int(message, "show", 1),
              "version": _int(message, "version", 0), "seats": seats}
    for name in ("expires_at", "ts"):
        if name in message:
            change[name] = _int(message, name, 0)
    return change
