"""The on-sale queue's order (a keyed permutation) and pace, without servers."""

from __future__ import annotations

import random

import pytest

from bookcluster.booking import queue_order
from bookcluster.booking.queue_order import Headroom, admit_rate, advance, permute, place

# Chi-square critical values at p = 0.001 (df = 9 and df = 81): a fair permutation fails
# these about once in a thousand seeds' worth of runs; the seeds below are fixed.
CHI2_DF9_P001 = 27.88
CHI2_DF81_P001 = 124.84


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 16, 17, 100, 1000, 4097])
def test_permute_is_a_bijection_of_the_early_joins(n: int) -> None:
    for seed in (0, 1, -5, 2**61 + 3):
        places = [permute(seed, n, seq) for seq in range(n)]
        assert sorted(places) == list(range(n))


def test_permute_refuses_a_seq_outside_the_range() -> None:
    with pytest.raises(ValueError):
        permute(1, 10, 10)


def test_the_seed_changes_the_order() -> None:
    orders = {tuple(permute(seed, 50, s) for s in range(50)) for seed in range(20)}
    assert len(orders) == 20


def test_every_early_joiner_is_equally_likely_at_every_place() -> None:
    """Over many seeds, the place of each of 10 early joins is uniform (chi-square on the
    10 x 10 table of join order x place, and on the first join alone): arriving first
    gives no advantage. An identity or a biased shuffle fails this."""
    n, seeds = 10, 8000
    table = [[0] * n for _ in range(n)]
    rng = random.Random(24)
    for _ in range(seeds):
        seed = rng.getrandbits(62)
        for seq in range(n):
            table[seq][permute(seed, n, seq)] += 1
    expected = seeds / n
    first = sum((c - expected) ** 2 / expected for c in table[0])
    assert first < CHI2_DF9_P001, table[0]
    # Each row and each column sums to `seeds`: (n-1)^2 degrees of freedom.
    whole = sum((c - expected) ** 2 / expected for row in table for c in row)
    assert whole < CHI2_DF81_P001


def test_late_joins_queue_in_arrival_order_behind_the_early_ones() -> None:
    assert place(5, None, None) is None  # before the seal
    early = sorted(place(s, 99, 5) for s in range(5))  # type: ignore[type-var]
    assert early == [0, 1, 2, 3, 4]
    assert [place(s, 99, 5) for s in (5, 6, 9)] == [5, 6, 9]


def test_rate_falls_with_store_latency_and_recovers() -> None:
    assert admit_rate(50, 0.001) == 50
    assert admit_rate(50, queue_order.TARGET_LATENCY_S * 4) == pytest.approx(12.5)
    assert admit_rate(50, 100.0) == pytest.approx(50 * queue_order.MIN_SHARE)
    assert admit_rate(50, 0.002) == 50


def _room(**kw: int) -> Headroom:
    base = {"available": 100, "locked": 0, "active": 0, "joined": 1000, "frontier": 0}
    return Headroom(**{**base, **kw})


def test_advance_follows_the_rate_and_carries_fractions() -> None:
    assert advance(_room(), 10.0, 0.5, 0.0) == (5, 0.0)
    step, carry = advance(_room(), 3.0, 0.5, 0.0)
    assert (step, carry) == (1, pytest.approx(0.5))
    assert advance(_room(), 3.0, 0.5, carry)[0] == 2


def test_advance_admits_no_more_shoppers_than_seats_nor_past_the_last_join() -> None:
    assert advance(_room(available=10, active=8), 100.0, 1.0, 0.0)[0] == 2
    assert advance(_room(available=10, active=10), 100.0, 1.0, 0.0) == (0, 0.0)
    assert advance(_room(joined=30, frontier=28), 100.0, 1.0, 0.0)[0] == 2


def test_sold_out_only_when_no_hold_can_lapse() -> None:
    assert queue_order.sold_out(_room(available=0, locked=0))
    held = _room(available=0, locked=3)
    assert not queue_order.sold_out(held)
    assert advance(held, 100.0, 1.0, 0.0) == (0, 0.0)  # paused until holds lapse


def test_a_large_queue_is_uniform_too() -> None:
    """Past the shuffle's size (the Feistel network): the first and a middle early join
    land in each tenth of the places equally often."""
    n = queue_order.SHUFFLE_UP_TO * 3 + 7
    seeds = 4000
    rng = random.Random(23)
    for seq in (0, n // 2):
        tenths = [0] * 10
        for _ in range(seeds):
            tenths[permute(rng.getrandbits(62), n, seq) * 10 // n] += 1
        expected = seeds / 10
        assert sum((c - expected) ** 2 / expected for c in tenths) < CHI2_DF9_P001, tenths


def test_a_large_permutation_is_a_bijection() -> None:
    n = queue_order.SHUFFLE_UP_TO + 1
    assert sorted(permute(7, n, s) for s in range(n)) == list(range(n))
