"""The audit's on-sale checks over rows as PostgreSQL gives them, without servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bookcluster.booking.queue_order import place
from bookcluster.ops.onsale_audit import holds, order

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def hold(booking: str, user: str, start: float, end: float, pass_booking: str | None
         ) -> dict[str, Any]:
    return {"onsale": "os7-00000000", "booking": booking, "user_id": user, "show_id": 7,
            "created_at": _at(start), "expires_at": _at(end), "pass_booking": pass_booking}


def test_each_hold_is_its_users_pass_or_a_violation() -> None:
    assert holds([hold("b1", "asha", 0, 600, "b1"), hold("b2", "ravi", 5, 605, "b2")]) == []
    found = holds([hold("b1", "asha", 0, 600, None)])
    assert [(f.check, f.show_id) for f in found] == [("unadmitted_hold", 7)]
    assert "b1" in found[0].detail and "asha" in found[0].detail
    # A second hold while the pass's ran: one admission, two shoppers.
    found = holds([hold("b1", "asha", 0, 600, "b1"), hold("b2", "asha", 30, 630, "b1")])
    assert [f.check for f in found] == ["admitted_twice"]
    assert "b2" in found[0].detail and "b1" in found[0].detail
    # Another hold after the pass's ended had no pass of its own.
    found = holds([hold("b1", "asha", 0, 600, "b1"), hold("b2", "asha", 700, 1300, "b1")])
    assert [f.check for f in found] == ["unadmitted_hold"]


def use(user: str, seq: int | None, used: float, seed: int | None = 5,
        n_early: int | None = 4) -> dict[str, Any]:
    return {"onsale_id": "os7-00000000", "user_id": user, "booking_id": f"b-{user}",
            "used_at": _at(used), "show_id": 7, "seq": seq, "seed": seed, "n_early": n_early}


def step(frontier: int, at: float) -> dict[str, Any]:
    return {"onsale_id": "os7-00000000", "frontier": frontier, "at": _at(at)}


def test_passes_are_used_only_once_the_queue_reached_their_place() -> None:
    first = next(s for s in range(4) if place(s, 5, 4) == 0)
    last = next(s for s in range(4) if place(s, 5, 4) == 3)
    steps = [step(1, 10), step(4, 20), step(6, 30)]
    assert order([use("a", first, 11), use("b", last, 21), use("late", 5, 31)], steps) == []
    found = order([use("b", last, 15)], steps)  # place 4 used a pass before frontier 4
    assert [f.check for f in found] == ["admission_order"]
    assert "place 4" in found[0].detail and "admitted only at" in found[0].detail
    assert "never admitted" in order([use("late", 9, 40)], steps)[0].detail
    assert "without ever joining" in order([use("x", None, 40)], steps)[0].detail
    assert "drawn" in order([use("a", 0, 5, seed=None, n_early=None)], [])[0].detail


def test_a_frontier_that_goes_back_is_out_of_order() -> None:
    found = order([], [step(3, 10), step(2, 20)])
    assert [f.check for f in found] == ["admission_order"]
    assert "went back to 2" in found[0].detail
