"""The shape check of seat change messages (no Redis needed to state it)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bookcluster.seats.changes import MalformedChange, parse_change

GOOD: dict[str, Any] = {"show": 7, "version": 3, "seats": ["A1", "A2"], "status": "LOCKED",
                        "booking": "b7-00", "expires_at": 1_700_000_600_000,
                        "ts": 1_700_000_000_000}


def test_a_change_as_the_scripts_publish_it_passes_whole() -> None:
    assert parse_change(json.dumps(GOOD).encode()) == GOOD
    assert parse_change(json.dumps({**GOOD, "gen": "x"}))["gen"] == "x"  # extra fields kept
    reset = {"show": 7, "version": 4, "status": "RESET", "seats": []}
    assert parse_change(json.dumps(reset)) == reset
    # cjson writes an empty Lua table as {}.
    assert parse_change(json.dumps({**reset, "seats": {}}))["seats"] == []
    released = {k: v for k, v in GOOD.items() if k != "expires_at"} | {"status": "AVAILABLE"}
    assert parse_change(json.dumps(released)) == released


def without(name: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k != name}


@pytest.mark.parametrize(("data", "reason"), [
    (b"not json", "not_json"),
    (b"\xff\xfe{}", "not_json"),  # not UTF-8
    (b"[" * 100_000 + b"]" * 100_000, "not_json"),  # nested past the recursion limit
    (b'{"show": ' + b"9" * 5000 + b"}", "not_json"),  # past Python's int digit limit
    (b"[1, 2]", "not_object"),
    (b'"show"', "not_object"),
    (b"null", "not_object"),
    (json.dumps(without("show")), "missing"),
    (json.dumps(without("seats")), "missing"),
    (json.dumps(without("expires_at")), "missing"),  # a hold says until when
    (json.dumps({}), "missing"),
    (json.dumps({**GOOD, "show": "7"}), "bad_type"),
    (json.dumps({**GOOD, "show": True}), "bad_type"),
    (json.dumps({**GOOD, "version": 3.0}), "bad_type"),
    (json.dumps({**GOOD, "seats": "A1"}), "bad_type"),
    (json.dumps({**GOOD, "seats": ["A1", 2]}), "bad_type"),
    (json.dumps({**GOOD, "status": "SOLD"}), "bad_type"),
    (json.dumps({**GOOD, "status": ["LOCKED"]}), "bad_type"),
    (json.dumps({**GOOD, "booking": 12}), "bad_type"),
    (json.dumps({**GOOD, "ts": "now"}), "bad_type"),
    (b'{"show": 7, "version": 1e999, "seats": [], "status": "BOOKED"}', "bad_type"),
    (json.dumps({**GOOD, "show": 0}), "out_of_range"),
    (json.dumps({**GOOD, "version": -1}), "out_of_range"),
    (json.dumps({**GOOD, "version": 1 << 63}), "out_of_range"),
    (json.dumps({**GOOD, "ts": 10 ** 400}), "out_of_range"),  # ts / 1000 overflows a float
])
def test_anything_else_is_malformed_and_says_why(data: bytes | str, reason: str) -> None:
    with pytest.raises(MalformedChange) as caught:
        parse_change(data)
    assert caught.value.reason == reason
