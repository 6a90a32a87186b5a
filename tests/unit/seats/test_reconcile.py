"""The reconciler's comparison of a show's Redis state with what PostgreSQL wants
(`reconcile.diff` and its parts), without a server: which seats it repairs, to what, and
which it must leave alone."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bookcluster.seats.reconcile import HOLD_SLACK_MS, agree, diff, pg_wanted, redis_has, redis_raw
from bookcluster.seats.state import SeatState

NOW_MS = 1_800_000_000_000
NOW = NOW_MS / 1000
B1, B2 = "b1-0000000000000001", "b1-0000000000000002"


def row(status: str, *, hold: str | None = None, expires_ms: int | None = None,
        booked: str | None = None) -> dict[str, Any]:
    """A show_seat row as `_pg_state` selects it (a Record reads like a dict)."""
    expires = None if expires_ms is None else datetime.fromtimestamp(expires_ms / 1000, UTC)
    return {"status": status, "hold_booking_id": hold, "hold_expires_at": expires,
            "booked_booking_id": booked}


def redis(holds: dict[str, tuple[str, int]] | None = None, booked: dict[str, str] | None = None,
          blocked: tuple[str, ...] = ()) -> SeatState:
    return SeatState(version=3, holds=holds or {}, booked=booked or {},
                     blocked=frozenset(blocked))


# -- what PostgreSQL wants -----------------------------------------------------------

def test_postgres_rows_as_the_mirror_should_hold_them() -> None:
    assert pg_wanted(row("UNAVAILABLE"), NOW) == "U"
    assert pg_wanted(row("BOOKED", booked=B1), NOW) == f"B:{B1}"
    assert pg_wanted(row("LOCKED", hold=B2, expires_ms=NOW_MS + 60_000), NOW) == \
        f"H:{B2}|{NOW_MS + 60_000}"
    assert pg_wanted(row("AVAILABLE"), NOW) == "A"


def test_a_lapsed_hold_in_postgres_is_wanted_free() -> None:
    """The sweeper has not ended it yet, but nobody may wait for that."""
    assert pg_wanted(row("LOCKED", hold=B2, expires_ms=NOW_MS), NOW) == "A"
    assert pg_wanted(row("LOCKED", hold=B2, expires_ms=NOW_MS - 1), NOW) == "A"


# -- what Redis has ------------------------------------------------------------------

def test_redis_seats_in_the_same_notation() -> None:
    state = redis({"A1": (B1, NOW_MS + 5)}, {"A2": B2}, ("A3",))
    assert [redis_has(state, s, NOW_MS) for s in ("A1", "A2", "A3", "A4")] == [
        f"H:{B1}|{NOW_MS + 5}", f"B:{B2}", "U", "A"]


def test_an_expired_redis_hold_is_free_but_the_repair_script_still_reads_a_hold() -> None:
    """`redis_has` answers what a reader sees; `redis_raw` what the compare-and-set
    REPAIR script finds in the hash, which keeps a lapsed hold until it is removed."""
    state = redis({"A1": (B1, NOW_MS)})
    assert redis_has(state, "A1", NOW_MS) == "A"
    assert redis_raw(state, "A1") == f"H:{B1}|{NOW_MS}"


def test_blocked_wins_over_booked_wins_over_held() -> None:
    state = redis({"A1": (B1, NOW_MS + 5)}, {"A1": B2}, ("A1",))
    assert redis_has(state, "A1", NOW_MS) == redis_raw(state, "A1") == "U"
    state = redis({"A1": (B1, NOW_MS + 5)}, {"A1": B2})
    assert redis_has(state, "A1", NOW_MS) == redis_raw(state, "A1") == f"B:{B2}"


@pytest.mark.parametrize(("want", "have", "same"), [
    ("A", "A", True),
    (f"B:{B1}", f"B:{B1}", True),
    (f"B:{B1}", f"B:{B2}", False),
    ("U", "A", False),
    (f"H:{B1}|{NOW_MS}", f"H:{B1}|{NOW_MS + HOLD_SLACK_MS}", True),
    (f"H:{B1}|{NOW_MS}", f"H:{B1}|{NOW_MS - HOLD_SLACK_MS}", True),
    (f"H:{B1}|{NOW_MS}", f"H:{B1}|{NOW_MS + HOLD_SLACK_MS + 1}", False),
    (f"H:{B1}|{NOW_MS}", f"H:{B2}|{NOW_MS}", False),
    (f"H:{B1}|{NOW_MS}", f"B:{B1}", False),
])
def test_hold_expiries_agree_within_the_slack_and_nothing_else_is_loose(
        want: str, have: str, same: bool) -> None:
    assert agree(want, have) is same


# -- the diff ------------------------------------------------------------------------

def test_a_mirror_that_agrees_needs_no_repair() -> None:
    wanted = {"A1": f"B:{B1}", "A2": f"H:{B2}|{NOW_MS + 60_000}", "A3": "U"}
    state = redis({"A2": (B2, NOW_MS + 60_500)}, {"A1": B1}, ("A3",))
    assert diff(wanted, state, set(), {B2}, NOW_MS) == {}


def test_a_sale_redis_missed_is_repaired_to_booked() -> None:
    assert diff({"A1": f"B:{B1}"}, redis(), set(), set(), NOW_MS) == {"A1": f"B:{B1}"}


def test_a_seat_redis_sold_that_postgres_did_not_is_freed() -> None:
    assert diff({}, redis(booked={"A1": B1}), set(), set(), NOW_MS) == {"A1": "A"}


def test_a_seat_postgres_blocked_is_blocked_in_redis_and_unblocked_when_it_is_not() -> None:
    assert diff({"A1": "U"}, redis(), set(), set(), NOW_MS) == {"A1": "U"}
    assert diff({}, redis(blocked=("A1",)), set(), set(), NOW_MS) == {"A1": "A"}


def test_a_hold_of_a_booking_postgres_does_not_know_is_left_alone() -> None:
    """Redis answers a hold before PostgreSQL records it: the hold may be in flight."""
    state = redis({"A1": (B1, NOW_MS + 60_000)})
    assert diff({}, state, set(), set(), NOW_MS) == {}
    # Once PostgreSQL knows the booking and does not hold the seat for it, it goes.
    assert diff({}, state, set(), {B1}, NOW_MS) == {"A1": "A"}


def test_a_hold_postgres_gave_to_another_booking_is_repaired() -> None:
    wanted = {"A1": f"H:{B2}|{NOW_MS + 60_000}"}
    state = redis({"A1": (B1, NOW_MS + 60_000)})
    assert diff(wanted, state, set(), set(), NOW_MS) == wanted


def test_a_hold_that_lapsed_in_redis_but_not_in_postgres_is_written_again() -> None:
    wanted = {"A1": f"H:{B1}|{NOW_MS + 60_000}"}
    state = redis({"A1": (B1, NOW_MS - 1)})
    assert diff(wanted, state, set(), {B1}, NOW_MS) == wanted


def test_settling_seats_wait_for_the_next_pass() -> None:
    """PostgreSQL changed them a moment ago: their mirror change may be on its way."""
    wanted = {"A1": f"B:{B1}", "A2": f"B:{B2}"}
    assert diff(wanted, redis(), {"A1"}, set(), NOW_MS) == {"A2": f"B:{B2}"}
    assert diff({}, redis(booked={"A3": B1}), {"A3"}, set(), NOW_MS) == {}
