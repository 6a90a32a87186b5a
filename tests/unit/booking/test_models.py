"""Request bodies and the booking's shape (`booking/models.py`), without a server: each
bad body is the 422 it was before (same code and `field`), and every place that builds a
booking's JSON (Python and the SQL of `bc_confirm`) builds `Booking`'s fields."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bookcluster.booking import models
from bookcluster.booking.holds import validate_hold_request
from bookcluster.booking.models import (
    Booking,
    BookingWithPayments,
    Confirmation,
    Hold,
    HoldRequest,
    PaymentEvent,
    PayRequest,
)
from bookcluster.errors import InvalidInput, MissingHeader
from bookcluster.node.schemas import from_models
from bookcluster.topology import load_topology

DB = Path(models.__file__).resolve().parents[1] / "db"
REPO = DB.parents[1]
USER = "u"


def refusal(call: Any, *args: Any) -> dict[str, Any]:
    with pytest.raises(InvalidInput) as refused:
        call(*args)
    return refused.value.body()


@pytest.mark.parametrize(("body", "field"), [
    ({"user_id": "u", "seat_ids": []}, "seat_ids"),
    ({"user_id": "u", "seat_ids": ["A1", "A1"]}, "seat_ids"),
    ({"user_id": "u", "seat_ids": [f"A{i}" for i in range(1, 12)]}, "seat_ids"),
    ({"user_id": "", "seat_ids": ["A1"]}, "user_id"),
    ({"user_id": "someone-else", "seat_ids": ["A1"]}, "user_id"),
    ({"user_id": None, "seat_ids": ["A1"]}, "user_id"),
    ({"seat_ids": []}, "seat_ids"),
    ({}, "seat_ids"),
    ({"user_id": "u", "seat_ids": "A1"}, "seat_ids"),
    ({"user_id": "u", "seat_ids": [1, 2]}, "seat_ids"),
    (["not", "an", "object"], None),
    ("A1", None),
])
def test_bad_hold_bodies(body: Any, field: str | None) -> None:
    answer = refusal(HoldRequest.parse, body, 10, USER)
    assert answer["error"] == "invalid_input" and answer["message"]
    assert answer.get("field") == field


def test_hold_body_is_sorted_and_keeps_ignoring_unknown_fields() -> None:
    request = HoldRequest.parse({"seat_ids": ["B2", "A10", "A1"], "note": {"x": 1}}, 10, USER)
    assert request.seat_ids == ["A1", "A10", "B2"]
    assert HoldRequest.parse({"user_id": USER, "seat_ids": ["A1"]}, 10, USER).user_id == USER
    assert validate_hold_request({"seat_ids": ["C3", "C1"]}, 10, USER) == ["C1", "C3"]


def test_hold_cap_and_duplicates_are_named() -> None:
    assert refusal(HoldRequest.parse, {"seat_ids": ["A1"] * 2000}, 10, USER) == {
        "error": "invalid_input", "message": "at most 10 seats per booking",
        "field": "seat_ids", "limit": 10}
    assert refusal(HoldRequest.parse, {"seat_ids": ["A2", "A1", "A2", "A1", "A3"]}, 10,
                   USER)["seats"] == ["A1", "A2"]


def test_confirm_needs_its_key_first_then_a_payment_id() -> None:
    with pytest.raises(MissingHeader):
        Confirmation.parse("b7-0123456789abcdef", None, {"payment_id": 7})
    assert refusal(Confirmation.parse, "b7-0123456789abcdef", "k\u00e9", {})["field"] \
        == "Idempotency-Key"
    for bad in ({}, {"payment_id": ""}, {"payment_id": 7}, {"payment_id": "a b"},
                {"payment_id": "p" * 129}, ["payment_id"], None):
        assert refusal(Confirmation.parse, "b7-0123456789abcdef", "k", bad)["field"] \
            == "payment_id"


def test_confirm_hash_is_the_one_stored_before() -> None:
    """Hashes stored under earlier versions must still match a retry's (the values were
    computed by the code before models.py); unknown fields stay part of the hash."""
    booking = "b7-0123456789abcdef"
    plain = Confirmation.parse(booking, "k", {"payment_id": "pay_1"})
    assert (plain.key, plain.payment_id) == ("k", "pay_1")
    assert plain.request_hash == \
        "5d8ab72c1659f394698c0e6ae1ca2df0580f4729cc2234d6558964343ce13c92"
    extra = Confirmation.parse(booking, "k", {"payment_id": "pay_1",
                                              "note": [1, {"b": 2, "a": 1}]})
    assert extra.request_hash == \
        "cc1051b4e6db929682c2b3bbf2ce87cbd46fcda7939e3f52e78dd50669e6fc1f"


def test_pay_body_is_empty_or_a_return_url_of_a_node() -> None:
    topology = load_topology(REPO / "topology.yaml")
    assert PayRequest.parse({}, topology) is None
    url = f"http://{topology.region('north').nodes[0]}/booking?paid={{PAYMENT_ID}}"
    assert PayRequest.parse({"return_url": url}, topology) == url
    for bad in ({"return_url": "http://evil.example/"}, {"return_url": url, "x": 1},
                {"return_url": 7}, {"return_url": None}, [], "x", {"x": url}):
        assert refusal(PayRequest.parse, bad, topology)["field"] == "return_url"


def test_webhook_event_refusals_name_the_field() -> None:
    good = {"event_id": "e1", "kind": "payment.captured", "payment_id": "p1",
            "booking_id": "b7-0123456789abcdef", "amount_paise": 100}
    event = PaymentEvent.parse({**good, "extra": True})
    assert event.as_job() == good
    assert "field" not in refusal(PaymentEvent.parse, {**good, "amount_paise": "100"})
    assert "field" not in refusal(PaymentEvent.parse, [good])
    for change, field in (({"kind": "payment.refunded"}, "kind"),
                          ({"event_id": "e 1"}, "event_id"),
                          ({"payment_id": "p" * 129}, "payment_id"),
                          ({"amount_paise": True}, "amount_paise"),
                          ({"amount_paise": 2**31}, "amount_paise"),
                          ({"amount_paise": -1}, "amount_paise"),
                          ({"booking_id": "b" + "9" * 19 + "-x"}, "booking_id"),
                          ({"booking_id": "b1/2"}, "booking_id")):
        assert refusal(PaymentEvent.parse, {**good, **change})["field"] == field


ROW = {"id": "b7-0123456789abcdef", "user_id": USER, "show_id": 7, "seat_ids": ["A1", "A2"],
       "status": "CONFIRMED", "amount_paise": 500, "payment_id": "pay_1",
       "created_at": datetime(2026, 12, 7, 5, 0, tzinfo=UTC),
       "expires_at": datetime(2026, 12, 7, 5, 10, tzinfo=UTC), "fence_token": 42}


def test_booking_answers_have_the_models_fields() -> None:
    booking = models.booking_json(ROW, "north")  # type: ignore[arg-type]
    assert list(booking) == list(Booking.__struct_fields__)
    msgspec.convert(booking, Booking)  # and the models' types
    hold = models.hold_json(booking)
    # `orphaned` is the one optional field: only a manual pick that leaves one has it.
    required = [f for f in Hold.__struct_fields__ if f != "orphaned"]
    assert list(hold) == required
    fresh = models.hold_answer("b7-0123456789abcdef", 7, USER, "north", ["A1"], 500,
                               "2026-12-07T05:10:00+00:00", 42)
    assert list(fresh) == required
    msgspec.convert(fresh, Hold)
    msgspec.convert({**fresh, "orphaned": ["A2"]}, Hold)
    msgspec.convert({**fresh, "seats": ["A1"]}, models.BestHold)
    payment = models.payment_json({"id": "pay_1", "status": "CAPTURED",  # type: ignore[arg-type]
                                   "amount_paise": 500})
    msgspec.convert({**booking, "payments": [payment]}, BookingWithPayments)
    assert msgspec.json.decode(models.encode(booking)) == booking


def test_the_confirm_answer_built_in_sql_has_the_booking_fields() -> None:
    """`bc_confirm` stores a sale's answer as SQL builds it; wherever its current text
    lives (migrations or functions), every booking object it builds is `Booking`."""
    built = []
    for path in sorted(DB.rglob("*.sql")):
        for block in re.findall(r"json_build_object\((.*?)\)::text", path.read_text(),
                                re.DOTALL):
            if "'hold_token'" in block:
                built.append((path.name, re.findall(r"'([a-z_]+)'\s*,", block)))
    assert built
    for name, keys in built:
        assert keys == list(Booking.__struct_fields__), name


def test_components_come_from_the_models_closed_with_the_seat_cap() -> None:
    components = from_models(7)
    for name in ("HoldRequest", "Hold", "Booking", "BookingWithPayments", "Payment",
                 "ConfirmRequest", "PayRequest", "PaymentEvent"):
        assert components[name]["additionalProperties"] is False, name
    seat_ids = components["HoldRequest"]["properties"]["seat_ids"]
    assert (seat_ids["minItems"], seat_ids["maxItems"], seat_ids["uniqueItems"]) == (1, 7, True)
    assert components["HoldRequest"]["required"] == ["seat_ids"]
    assert components["BookingWithPayments"]["properties"]["payments"]["items"] == {
        "$ref": "#/components/schemas/Payment"}
    assert set(components["Booking"]["required"]) == set(Booking.__struct_fields__)
