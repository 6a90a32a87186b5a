"""A brute-force reading of the best-available rule (`bookcluster/seats/best.py`'s
docstring), written apart from `best.choose`: every set of `count` eligible seats is
classified and scored on its own, and the smallest key wins. Slow on purpose; shared by
the unit tests (against `choose`) and the integration tests (random layouts)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Collection

from bookcluster.seats.best import Layout, Place


def _shape(layout: Layout, seats: tuple[Place, ...]) -> int | None:
    """0 one section of one row, 1 one row across an aisle, 2 two stacked runs in adjacent
    rows, None: not a block."""
    rows = sorted({p.row for p in seats})
    parts = [sorted((p for p in seats if p.row == r), key=lambda p: p.position) for r in rows]

    def consecutive(part: list[Place]) -> bool:  # no other seat of the row in between
        row = layout.rows[part[0].row]
        index = [row.index(p) for p in part]
        return index == list(range(index[0], index[0] + len(part)))

    def one_section(part: list[Place]) -> bool:
        return all(b.position - a.position == 1 for a, b in itertools.pairwise(part))

    if len(rows) == 1:
        if not consecutive(parts[0]):
            return None
        return 0 if one_section(parts[0]) else 1
    if len(rows) == 2 and rows[1] == rows[0] + 1:
        front, back = parts
        if not all(consecutive(p) and one_section(p) for p in parts):
            return None
        overlap = (front[0].position <= back[-1].position
                   and back[0].position <= front[-1].position)
        return 2 if overlap else None
    return None


def _alone(layout: Layout, place: Place, free: Collection[str]) -> bool:
    neighbours = {p.position: p.seat_id for p in layout.rows[place.row]}
    return not any(neighbours.get(place.position + d) in free for d in (-1, 1))


def _leaves_orphan(layout: Layout, free: Collection[str], seats: tuple[Place, ...]) -> bool:
    taken = {p.seat_id for p in seats}
    after = {s for s in free if s not in taken}
    for r in {p.row for p in seats}:
        for place in layout.rows[r]:
            if place.seat_id in after and _alone(layout, place, after) \
                    and not _alone(layout, place, free):
                return True
    return False


def _cost(layout: Layout, p: Place) -> int:
    """Squared distance to the focal point in half seat widths (the rule's cost)."""
    return (2 * p.position - layout.focal_x2) ** 2 + (2 * p.row - 2 * layout.focal_row) ** 2


def reference(layout: Layout, free: Collection[str], count: int, category: str | None,
              accessible: bool, allow_split: bool) -> tuple[str, ...] | None:
    eligible = [p for row in layout.rows for p in row
                if p.seat_id in free and (category is None or p.category == category)
                and (not accessible or p.accessible)]
    best_key: tuple[object, ...] | None = None
    best_seats: tuple[Place, ...] = ()
    for seats in itertools.combinations(eligible, count):
        cost = sum(_cost(layout, p) for p in seats)
        shape = _shape(layout, seats)
        key: tuple[object, ...]
        if shape is None:
            if not allow_split:
                continue
            key = (2, 3, cost, tuple(sorted((_cost(layout, p), p.row, p.position, p.seat_id)
                                            for p in seats)))
        else:
            key = (int(_leaves_orphan(layout, free, seats)), shape, cost,
                   tuple(sorted((p.row, p.position) for p in seats)))
        if best_key is None or key < best_key:
            best_key, best_seats = key, seats
    if best_key is None:
        return None
    return tuple(sorted(p.seat_id for p in best_seats))


def random_layout(rng: random.Random, max_rows: int = 3, max_seats: int = 7) -> Layout:
    """A small screen: 1..max_rows rows of 1..max_seats seats with random aisles and
    missing positions, categories a/b, a few accessible spaces, a random focal point."""
    rows = []
    for r in range(rng.randint(1, max_rows)):
        position, row = rng.randint(1, 2), []
        for n in range(rng.randint(1, max_seats)):
            row.append(Place(f"{'ABCDEFGH'[r]}{n + 1}", r, position, rng.choice("ab"),
                             rng.random() < 0.2))
            position += 1 if rng.random() < 0.75 else rng.randint(2, 3)
        rows.append(tuple(row))
    focal_row = rng.randrange(len(rows))
    return Layout(tuple(rows), focal_row, rng.randint(1, 2 * max_seats + 4))
