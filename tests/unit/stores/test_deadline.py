"""The one deadline of a write: what a forwarder's header may do to it, what a forward
passes on, and what a store call gets when none is left."""

from __future__ import annotations

import time

import pytest

from bookcluster.stores import deadline
from bookcluster.stores.deadline import (
    REPLY_MARGIN_S,
    STORE_BUDGET_S,
    WRITE_BUDGET_S,
    Deadline,
    of_request,
)
from bookcluster.topology.errors import RegionUnavailable


def test_without_a_header_a_write_gets_the_whole_budget() -> None:
    before = time.time()
    limit = of_request(None)
    after = time.time()
    assert before + WRITE_BUDGET_S <= limit.at <= after + WRITE_BUDGET_S


def test_a_forwarders_earlier_deadline_is_taken() -> None:
    at_ms = int((time.time() + 0.5) * 1000)
    assert of_request(str(at_ms)).at == at_ms / 1000


def test_a_header_never_makes_the_deadline_later() -> None:
    before = time.time()
    limit = of_request(str(int((time.time() + 3600) * 1000)))
    assert before + WRITE_BUDGET_S <= limit.at <= time.time() + WRITE_BUDGET_S


def test_a_deadline_already_past_is_kept_and_refuses_every_store_call() -> None:
    limit = of_request("1000")  # 1970: the forwarder's caller gave up long ago
    assert limit.at == 1.0 and limit.expired()
    with pytest.raises(RegionUnavailable) as refused:
        limit.left_for("south", "redis master")
    assert refused.value.region == "south" and refused.value.outcome == "not_applied"
    assert "redis master: deadline passed before it was sent" in str(refused.value.component)


@pytest.mark.parametrize("header", [
    "", "soon", "-5", "1.5", " 1000", "1000 ", "+1000",
    "١٠٠٠",  # Arabic-Indic digits: str.isdigit() says yes, int() would take them
    "0" * 15 + "1",  # longer than any unix time in ms (read, it would be 1 ms past 1970)
])
def test_a_malformed_header_is_ignored(header: str) -> None:
    before = time.time()
    limit = of_request(header)
    assert before + WRITE_BUDGET_S <= limit.at <= time.time() + WRITE_BUDGET_S


def test_a_forward_keeps_back_the_margin_for_the_answer() -> None:
    limit = Deadline(1_700_000_000.0)
    forwarded = limit.forwarded()
    assert forwarded == str(int((1_700_000_000.0 - REPLY_MARGIN_S) * 1000))
    # The home node reads it back as its own, earlier, deadline.
    assert Deadline(int(forwarded) / 1000).at == 1_700_000_000.0 - REPLY_MARGIN_S


def test_left_for_gives_the_seconds_left() -> None:
    limit = Deadline.after(60)
    assert 0 < limit.left_for("north", "postgres primary") <= 60
    assert not limit.expired()


def test_store_calls_work_to_the_running_requests_deadline() -> None:
    limit = Deadline(time.time() + 0.75)
    with deadline.running(limit):
        assert deadline.current() is limit
        with deadline.running(None):  # clean-up after a request gave up: its own budget
            before = time.time()
            fresh = deadline.current()
            assert before + STORE_BUDGET_S <= fresh.at <= time.time() + STORE_BUDGET_S
        assert deadline.current() is limit
    before = time.time()
    outside = deadline.current()
    assert outside is not limit
    assert before + STORE_BUDGET_S <= outside.at <= time.time() + STORE_BUDGET_S


def test_the_running_deadline_is_restored_after_an_error() -> None:
    limit = Deadline(time.time() + 5)
    with pytest.raises(ValueError), deadline.running(limit):
        raise ValueError
    assert deadline.current() is not limit


def test_a_script_must_start_a_clock_margin_before_the_deadline() -> None:
    """The master compares its clock with `script_ms`: earlier than the deadline by the
    skew it tolerates, so a lagging master still refuses a late script."""
    d = deadline.Deadline(1_700_000_000.5)
    assert d.script_ms() == int((d.at - deadline.CLOCK_MARGIN_S) * 1000)
    assert d.script_ms() < int(d.at * 1000)
    assert 0 < deadline.CLOCK_MARGIN_S < deadline.REPLY_MARGIN_S


def test_a_script_is_cut_off_when_its_caller_stops_waiting_if_sooner() -> None:
    """The node answers 503 at its socket timeout: a script must not start after that."""
    far = deadline.Deadline(time.time() + 60)
    cut = far.script_ms(0.8)
    assert cut <= int((time.time() + 0.8 - deadline.CLOCK_MARGIN_S) * 1000) + 1
    assert cut < far.script_ms() - 50_000
    near = deadline.Deadline(time.time() + 0.1)
    assert near.script_ms(0.8) == near.script_ms()
