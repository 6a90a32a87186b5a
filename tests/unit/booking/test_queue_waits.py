"""Waits (p50/p99) and abandonment of an on-sale's queue, without servers."""

from __future__ import annotations

from bookcluster.booking.onsale_state import Counters
from bookcluster.booking.onsales import queue_summary
from bookcluster.booking.queue_order import permute
from bookcluster.booking.queue_waits import Waits, abandoned


def test_quantiles_are_nearest_rank_over_every_wait() -> None:
    waits = Waits()
    assert waits.quantile(0.5) is None
    waits.add([5.0, 1.0, 3.0])
    waits.add([2.0, 4.0, -0.2])  # a clock a hair behind: no negative wait
    assert list(waits.seconds) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert (waits.quantile(0.5), waits.quantile(0.99), waits.quantile(1.0)) == (2.0, 5.0, 5.0)
    many = Waits()
    many.add(float(s) for s in range(1000, 0, -2))  # a batch sorted in at once
    many.add(float(s) for s in range(999, 0, -2))
    many.add([0.5])
    assert list(many.seconds) == [0.5, *map(float, range(1, 1001))]
    assert (many.quantile(0.5), many.quantile(0.99)) == (500.0, 990.0)


def test_abandoned_counts_expired_places_whose_pass_was_not_used() -> None:
    seed, n_early = 11, 6
    seq_of = {permute(seed, n_early, s): s for s in range(n_early)}  # place -> seq
    # Places 0..3 admitted a window ago; the users at places 0 and 2 held, the one at
    # place 4 (admitted since) held too, and so did a late joiner (seq 7 = place 7).
    used = [seq_of[0], seq_of[2], seq_of[4], 7]
    assert abandoned(4, used, seed, n_early) == 2
    assert abandoned(0, used, seed, n_early) == 0
    assert abandoned(8, used, seed, n_early) == 4
    assert abandoned(3, [], None, None) == 3  # (no draw yet: no pass could be used)


def test_the_published_counters_carry_waits_and_abandonment() -> None:
    counters = Counters(7, 10, 50, 20, False, 3.0, 0, 12.5, 98.25, 4)
    again = Counters.parse(counters.fields())
    assert again == counters
    assert Counters.parse({**counters.fields(), "wait_p50": "", "wait_p99": ""}) == \
        Counters(7, 10, 50, 20, False, 3.0, 0, None, None, 4)
    summary = queue_summary(counters)
    assert (summary["wait_p50_s"], summary["wait_p99_s"], summary["abandoned"]) == \
        (12.5, 98.25, 4)
    older = {k: v for k, v in counters.fields().items()
             if k not in ("wait_p50", "wait_p99", "abandoned")}
    assert Counters.parse(older) == Counters(7, 10, 50, 20, False, 3.0, 0)  # before them
