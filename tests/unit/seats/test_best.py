"""The best-available rule (`seats/best.py`): `choose` against a brute-force search of
every seat set (`best_reference.py`), and the orphan check of manual picks."""

from __future__ import annotations

import itertools
import random

import pytest

from bookcluster.booking.models import BestRequest
from bookcluster.catalog import SeatInfo
from bookcluster.errors import InvalidInput
from bookcluster.seats import best
from bookcluster.seats.best import Layout, Place
from tests.unit.seats.best_reference import random_layout, reference


def row(r: int, positions: list[int], category: str = "a") -> tuple[Place, ...]:
    return tuple(Place(f"{'ABCDEFGH'[r]}{n + 1}", r, pos, category)
                 for n, pos in enumerate(positions))


def test_every_free_set_of_two_small_screens_matches_the_brute_force() -> None:
    """Exhaustive: every occupancy of two small screens (one with an aisle, one with rows
    of different widths), every count, split allowed or not."""
    screens = [Layout((row(0, [1, 2, 4, 5]), row(1, [1, 2, 4, 5])), 1, 6),
               Layout((row(0, [2, 3, 4]), row(1, [1, 2, 3, 4]), row(2, [1, 2])), 0, 5)]
    checked = 0
    for layout in screens:
        seats = [p.seat_id for r in layout.rows for p in r]
        for mask in range(1 << len(seats)):
            free = {s for i, s in enumerate(seats) if mask >> i & 1}
            for count, split in itertools.product(range(1, 5), (False, True)):
                got = best.choose(layout, free, count, allow_split=split)
                want = reference(layout, free, count, None, False, split)
                assert (got.seats if got else None) == want, (layout, free, count, split)
                checked += 1
    assert checked > 6000


def test_random_small_screens_match_the_brute_force() -> None:
    rng = random.Random(23)
    chosen = 0
    for _ in range(3000):
        layout = random_layout(rng)
        seats = [p.seat_id for r in layout.rows for p in r]
        free = {s for s in seats if rng.random() < 0.7}
        count = rng.randint(1, 4)
        category = rng.choice([None, "a"])
        accessible = rng.random() < 0.1
        split = rng.random() < 0.3
        got = best.choose(layout, free, count, category=category, accessible=accessible,
                          allow_split=split)
        want = reference(layout, free, count, category, accessible, split)
        assert (got.seats if got else None) == want, (layout, free, count, category, split)
        chosen += got is not None
    assert chosen > 1000  # most cases chose something: the comparison is not all None


def test_a_block_without_an_orphan_wins_over_a_nearer_one() -> None:
    # Row A: 1 2 3 4 5 6, 1 taken. Two seats nearest the middle (3, 4) would leave 2 alone;
    # 5, 6 would leave none... but 2, 3 leaves none and is nearer.
    layout = Layout((row(0, [1, 2, 3, 4, 5, 6]),), 0, 7)
    free = {"A2", "A3", "A4", "A5", "A6"}
    choice = best.choose(layout, free, 2)
    assert choice is not None and choice.seats == ("A2", "A3") and not choice.orphan
    # Only an orphaning block left: taken, and marked so.
    choice = best.choose(layout, {"A2", "A3", "A4"}, 2)
    assert choice is not None and choice.orphan


def test_same_row_across_an_aisle_before_two_rows_before_split() -> None:
    layout = Layout((row(0, [1, 2, 4, 5]), row(1, [1, 2, 4, 5])), 0, 6)
    across = best.choose(layout, {"A2", "A3", "B1", "B4"}, 2)
    assert across is not None and across.seats == ("A2", "A3")
    assert across.shape == best.ACROSS_AISLE
    stacked = best.choose(layout, {"A1", "B1", "A4"}, 2)
    assert stacked is not None and stacked.shape == best.TWO_ROWS
    assert stacked.seats == ("A1", "B1")
    assert best.choose(layout, {"A1", "B4"}, 2) is None
    split = best.choose(layout, {"A1", "B4"}, 2, allow_split=True)
    assert split is not None and split.shape == best.SPLIT and split.seats == ("A1", "B4")


def test_category_and_accessible_spaces_are_respected() -> None:
    layout = Layout((tuple(Place(f"A{n}", 0, n, "gold" if n > 3 else "silver", n == 1)
                           for n in range(1, 7)),), 0, 7)
    free = {f"A{n}" for n in range(1, 7)}
    gold = best.choose(layout, free, 3, category="gold")
    assert gold is not None and gold.seats == ("A4", "A5", "A6")
    assert best.choose(layout, free, 4, category="gold") is None
    wheelchair = best.choose(layout, free, 1, accessible=True)
    assert wheelchair is not None and wheelchair.seats == ("A1",)


def test_manual_pick_orphans() -> None:
    # Seats named by position: an aisle between A4 and A6.
    layout = Layout((tuple(Place(f"A{n}", 0, n) for n in (1, 2, 3, 4, 6, 7)),), 0, 7)
    free = {"A1", "A2", "A3", "A4", "A6", "A7"}
    # A1 alone at the row's end, A4 beside the aisle.
    assert best.orphans(layout, free, {"A2", "A3"}) == ["A1", "A4"]
    assert best.orphans(layout, free, {"A6"}) == ["A7"]  # the aisle is an end too
    assert best.orphans(layout, free, {"A1", "A2"}) == []
    # A seat already alone is not this pick's orphan.
    assert best.orphans(layout, {"A1", "A3", "A4"}, {"A3", "A4"}) == []


def test_layout_from_the_catalog_defaults_and_round_trip() -> None:
    seats = [SeatInfo(f"{r}{n}", r, n, "gold", 100, False, n + (n > 4)) for r in "ABCD"
             for n in range(1, 9)]
    layout = best.layout_of(seats)
    assert layout.focal_row == 2  # two thirds back of 4 rows (0-based 2)
    assert layout.focal_x2 == 1 + 9  # the middle of positions 1..9
    assert best.decode(layout.encode()) == layout
    focal = best.layout_of(seats, "A", 2.5)
    assert (focal.focal_row, focal.focal_x2) == (0, 5)
    # Rows front to back: shorter labels first (Z before AA).
    assert best.row_order("Z") < best.row_order("AA")


def test_best_request_body() -> None:
    assert BestRequest.parse({"count": 2}, 10) == BestRequest(2)
    assert BestRequest.parse({"count": 3, "category": "GOLD", "accessible": True,
                              "allow_split": True}, 10).allow_split
    for body in ({}, {"count": 0}, {"count": 11}, {"count": "2"}, {"count": 2, "x": 1},
                 {"count": 2, "category": ""}, [], {"count": 2, "allow_split": "yes"}):
        with pytest.raises(InvalidInput):
            BestRequest.parse(body, 10)
