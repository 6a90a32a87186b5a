"""On-sale tokens, request validation and position answers, without servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bookcluster.booking.onsale_state import Counters, OnSale
from bookcluster.booking.onsales import (
    GUARD_REFRESH_S,
    OnSaleRequest,
    guard_fresh,
    position,
    queue_summary,
)
from bookcluster.booking.passes import AdmissionPass, QueueTicket, TokenRefused
from bookcluster.booking.queue_order import jitter_of, place, poll_after_s
from bookcluster.errors import InvalidOnSale

SECRET = "s" * 32
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
ONSALE = OnSale("os7-0a0b0c0d", (7, 8), NOW - timedelta(minutes=5), NOW, 600, 4, "north")


def test_tokens_verify_only_with_their_key_and_kind() -> None:
    ticket = QueueTicket("os7-0a0b0c0d", "asha", 3)
    assert QueueTicket.verify(SECRET, ticket.sign(SECRET)) == ticket
    with pytest.raises(TokenRefused):
        QueueTicket.verify("t" * 32, ticket.sign(SECRET))
    with pytest.raises(TokenRefused):  # a ticket is not a pass
        AdmissionPass.verify(SECRET, ticket.sign(SECRET))
    admission = AdmissionPass("os7-0a0b0c0d", "asha", (7, 8), 4, 2, 1e9)
    signed = admission.sign(SECRET)
    assert AdmissionPass.verify(SECRET, signed) == admission
    body, _, mac = signed.partition(".")
    forged = AdmissionPass("os7-0a0b0c0d", "ravi", (7, 8), 4, 2, 1e9).sign(SECRET)
    with pytest.raises(TokenRefused):  # another user's claims under this signature
        AdmissionPass.verify(SECRET, f"{forged.partition('.')[0]}.{mac}")
    for junk in ("", "x", "a.b", body + "." + "0" * 64):
        with pytest.raises(TokenRefused):
            AdmissionPass.verify(SECRET, junk)


def _request(**kw: object) -> dict[str, object]:
    return {"shows": [7], "opens_at": "2026-12-07T11:00:00+00:00",
            "sale_at": "2026-12-07T12:00:00+00:00", **kw}


def test_onsale_requests_are_checked_field_by_field() -> None:
    parsed = OnSaleRequest.parse(_request(), 10, NOW)
    assert (parsed.shows, parsed.window_s, parsed.max_party) == ((7,), 600, 6)
    bad = [({"shows": []}, "shows"), ({"shows": [7, 7]}, "shows"), ({"shows": ["7"]}, "shows"),
           ({"opens_at": "2026-12-07T13:00:00+00:00"}, "opens_at"),
           ({"sale_at": "2026-12-07T12:00:00"}, "sale_at"),  # no offset
           ({"sale_at": "2027-06-01T12:00:00+00:00"}, "sale_at"),
           ({"window_s": 5}, "window_s"), ({"max_party": 11}, "max_party"),
           ({"max_party": True}, "max_party"), ({"color": "red"}, "color")]
    for change, field in bad:
        with pytest.raises(InvalidOnSale) as refused:
            OnSaleRequest.parse(_request(**change), 10, NOW)
        assert refused.value.details.get("field") == field, change
        assert refused.value.status == 400


def _at(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def test_before_the_sale_everyone_waits_without_a_place() -> None:
    ticket = QueueTicket(ONSALE.id, "asha", 0)
    counters = Counters(None, None, 5, 0, False, 0.0, 0)
    got = position(ONSALE, counters, ticket, None, _at(NOW - timedelta(seconds=30)), SECRET)
    assert (got["state"], got["place"], got["estimated_wait_s"]) == ("waiting", None, 30.0)


def test_admitted_users_get_a_pass_bound_to_them_and_their_window() -> None:
    counters = Counters(42, 5, 8, 3, False, 2.0, 0)
    admitted_seq = next(s for s in range(5) if place(s, 42, 5) == 1)
    ticket = QueueTicket(ONSALE.id, "asha", admitted_seq)
    got = position(ONSALE, counters, ticket, _at(NOW), _at(NOW + timedelta(seconds=60)), SECRET)
    assert got["state"] == "admitted" and got["place"] == 2 and got["ahead"] == 0
    admission = AdmissionPass.verify(SECRET, got["pass"])
    assert (admission.user, admission.shows, admission.max_party) == ("asha", (7, 8), 4)
    assert admission.expires_at == NOW.timestamp() + 600
    later = position(ONSALE, counters, ticket, _at(NOW), _at(NOW + timedelta(seconds=600)),
                     SECRET)
    assert later["state"] == "expired" and "pass" not in later


def test_waiting_users_see_their_place_and_are_told_when_sold_out() -> None:
    counters = Counters(42, 5, 8, 3, False, 2.0, 0)
    ticket = QueueTicket(ONSALE.id, "ravi", 7)  # a late join: place 8, 5 ahead
    got = position(ONSALE, counters, ticket, None, _at(NOW), SECRET)
    assert (got["state"], got["place"], got["ahead"], got["estimated_wait_s"]) == \
        ("waiting", 8, 4, 2.0)
    gone = Counters(42, 5, 8, 3, True, 0.0, 0)
    assert position(ONSALE, gone, ticket, None, _at(NOW), SECRET)["state"] == "sold_out"


def test_a_position_says_when_to_poll_again_near_often_far_rarely() -> None:
    assert poll_after_s("waiting", 5.0) == 2.0
    assert poll_after_s("waiting", 120.0) == 12.0
    assert poll_after_s("waiting", 3600.0) == 30.0
    assert poll_after_s("waiting", None) == 15.0  # paused: the rate is 0
    assert poll_after_s("sold_out", None) == 15.0  # lapsing holds may resume it
    assert poll_after_s("admitted", 0.0) is None
    assert poll_after_s("expired", None) is None
    ticket = QueueTicket(ONSALE.id, "asha", 3)
    counters = Counters(7, 10, 12, 0, False, 2.0, 0)
    got = position(ONSALE, counters, ticket, None, _at(NOW), SECRET)
    assert got["state"] == "waiting" and got["poll_after_s"] >= 2.0
    admitted = Counters(7, 10, 12, 12, False, 2.0, 0)
    got = position(ONSALE, admitted, ticket, _at(NOW), _at(NOW), SECRET)
    assert got["state"] == "admitted" and "poll_after_s" not in got


def test_the_operator_sees_each_queue_from_its_counters() -> None:
    assert queue_summary(None)["waiting"] == 0
    got = queue_summary(Counters(7, 10, 50, 20, False, 3.0, 0))
    assert got == {"joined": 50, "admitted": 20, "waiting": 30, "rate_per_s": 3.0,
                   "sold_out": False, "sealed": True, "last_wait_s": 10.0,
                   "wait_p50_s": None, "wait_p99_s": None, "abandoned": 0}
    assert queue_summary(Counters(None, None, 5, 0, False, 0.0, 0))["last_wait_s"] is None


def test_polls_are_spread_so_a_crowd_told_at_once_does_not_come_back_at_once() -> None:
    assert poll_after_s("waiting", 120.0, 0.0) == 9.0  # 12 s less a quarter
    assert poll_after_s("waiting", 120.0, 0.999) == 15.0  # 12 s and (nearly) a quarter
    assert poll_after_s("waiting", 5.0, 0.0) == 2.0  # never under the floor
    assert poll_after_s("sold_out", None, 0.0) == 11.2
    crowd = {poll_after_s("waiting", 300.0, jitter_of(f"u{i}", 1_000)) for i in range(200)}
    assert min(crowd) < 25.0 and max(crowd) > 35.0 and len(crowd) > 50


def test_before_the_sale_a_crowd_polls_rarely_then_once_spread_after_sale_at() -> None:
    # Far from the sale: every five minutes, spread.
    assert poll_after_s("waiting", 3600.0, 0.5, to_sale_s=3600.0, joined=10) == 300.0
    assert poll_after_s("waiting", 3600.0, 0.0, to_sale_s=3600.0, joined=10) == 225.0
    # Near it: come back once, after sale_at, not every 2 s until then.
    assert poll_after_s("waiting", 20.0, 0.0, to_sale_s=20.0, joined=10) == 20.0
    assert poll_after_s("waiting", 200.0, 0.0, to_sale_s=200.0, joined=10) == 200.0
    # Spread over longer the more joined: 200,000 joined spread over 30 s, 1,000 over 2 s.
    many = [poll_after_s("waiting", 20.0, jitter_of(f"u{i}", 5), to_sale_s=20.0,
                         joined=200_000) for i in range(1000)]
    assert all(m is not None and 20.0 <= m <= 50.0 for m in many)
    assert max(m for m in many if m is not None) > 45.0
    few = [poll_after_s("waiting", 20.0, jitter_of(f"u{i}", 5), to_sale_s=20.0, joined=1000)
           for i in range(1000)]
    assert all(f is not None and 20.0 <= f <= 22.0 for f in few)
    # Past sale_at with no place drawn yet: soon, never below the floor.
    assert poll_after_s("waiting", None, 0.0, to_sale_s=0.0, joined=5) == 2.0
    ticket = QueueTicket(ONSALE.id, "asha", 0)
    counters = Counters(None, None, 5, 0, False, 0.0, 0)
    got = position(ONSALE, counters, ticket, None, _at(NOW - timedelta(seconds=10)), SECRET)
    assert 10.0 <= got["poll_after_s"] <= 12.0


def test_a_hold_is_guarded_only_by_a_list_read_since_post_onsales_could_answer() -> None:
    assert guard_fresh(100.0, 100.0 + GUARD_REFRESH_S * 0.9)
    # POST /ops/onsales answers GUARD_REFRESH_S after creating: a list read before
    # that may lack the on-sale, so it must be read again before a hold goes on.
    assert not guard_fresh(100.0, 100.0 + GUARD_REFRESH_S)
    assert not guard_fresh(100.0, 1000.0)  # the stale warm-up list of the medium run
