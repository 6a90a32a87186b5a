"""Which seats are "best": the rule best-available holds follow, defined here once.

A screen's layout is rows of seats, front (nearest the screen) to back; each seat has a
`position` across its row (a gap between positions is an aisle), a category and
whether it is an accessible space. The **focal point** is the screen's sweet spot:
a row and a position in it (the catalog's `screen.focal_row` / `focal_seat`; by
default the row two thirds of the way back, and the middle of that row).

A seat is *free* when it is not held, sold or blocked; *eligible* when it is free and
matches the request (its `category` if one was asked; accessible spaces only if
`accessible` was asked). Among every set of `count` eligible seats, the best is the
one with the smallest key (orphan, shape, cost, seats):
- **shape**: 0 side by side in one row with no aisle between them; 1 side by side in
  one row across an aisle; 2 two runs of side-by-side seats (no aisle in either) in
  two adjacent rows, one behind the other (their position ranges overlap);
  3 any seats (only when the client allows a split).
- **orphan**: 1 if taking the block would leave a free seat alone between taken
  seats, blocked seats, an aisle or a row's end (an *orphan*) that was not alone
  before; else 0. A split (shape 3) counts as 2: it comes after every block.
  So a block that leaves no orphan is always taken while one exists, in any shape.
- **cost**: the sum over the seats of the squared distance to the focal point,
  measured in half seat widths (so a focal point between two seats stays integral):
  (2 * position - 2 * focal_seat)^2 + (2 * (row - focal_row))^2.
- **seats**: ties go to the block whose seats, sorted by (row, position), come first.

`choose` implements this rule; the BEST script (`scripts.py`) implements the same
rule in Lua at the home master, where it chooses and holds in one step; unit tests
hold `choose` to a brute-force search of every seat set, integration tests hold the
script to `choose`. `orphans` is the same orphan test for seats picked by hand
(`screen.no_orphan_seats`: refuse, warn or off).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

OrphanPolicy = Literal["refuse", "warn", "off"]
ORPHAN_POLICIES: tuple[str, ...] = ("refuse", "warn", "off")

ONE_SECTION, ACROSS_AISLE, TWO_ROWS, SPLIT = 0, 1, 2, 3


class CatalogSeat(Protocol):
    """What the rule needs of a catalog seat (`catalog.SeatInfo`)."""

    @property
    def seat_id(self) -> str: ...
    @property
    def row(self) -> str: ...
    @property
    def position(self) -> int: ...
    @property
    def category(self) -> str: ...
    @property
    def accessible(self) -> bool: ...


@dataclass(frozen=True)
class Place:
    """A seat where it is: `row` counts from the front (0), `position` across it."""

    seat_id: str
    row: int
    position: int
    category: str = ""
    accessible: bool = False


@dataclass(frozen=True)
class Layout:
    """A screen's seats by row (each sorted by position) and its focal point, as
    `focal_row` (a row index) and `focal_x2` (twice the focal position)."""

    rows: tuple[tuple[Place, ...], ...]
    focal_row: int
    focal_x2: int

    def cost(self, place: Place) -> int:
        return ((2 * place.position - self.focal_x2) ** 2
                + (2 * (place.row - self.focal_row)) ** 2)

    def encode(self) -> dict[str, str]:
        """The layout as the BEST script reads it (`keys.show_layout`), a hash of short
        strings the script reads a row at a time (it parses only the rows it looks at):
        "n" rows, "fr" focal row (0-based), "fx" focal_x2, "cats" the categories
        (newline-separated), and per row "r<1-based index>": its seat ids (space-
        separated), a tab, then 4 characters a seat: position in base 64 (two digits,
        each chr(48 + digit)), chr(48 + category index), "1" accessible else "0"."""
        cats = sorted({p.category for row in self.rows for p in row})
        if len(cats) > 64 or any("\n" in c for c in cats):
            raise ValueError("at most 64 categories, without newlines")
        index = {c: i for i, c in enumerate(cats)}
        fields = {"n": str(len(self.rows)), "fr": str(self.focal_row),
                  "fx": str(self.focal_x2), "cats": "\n".join(cats)}
        for r, row in enumerate(self.rows, 1):
            if any(not 0 < p.position < 4096 or " " in p.seat_id or "\t" in p.seat_id
                   for p in row):
                raise ValueError(f"row {r}: positions 1..4095, seat ids without blanks")
            codes = "".join(chr(48 + p.position // 64) + chr(48 + p.position % 64)
                            + chr(48 + index[p.category]) + ("1" if p.accessible else "0")
                            for p in row)
            fields[f"r{r}"] = " ".join(p.seat_id for p in row) + "\t" + codes
        return fields


def row_order(label: str) -> tuple[int, str]:
    """Rows front to back: A..Z, then AA.. (shorter labels first)."""
    return len(label), label


def default_focal_row(rows: int) -> int:
    """Two thirds of the way back (rounded half up), 0 for an empty screen."""
    return (2 * (rows - 1) + 1) // 3 if rows > 0 else 0


def layout_of(seats: Iterable[CatalogSeat], focal_row: str | None = None,
              focal_seat: float | None = None) -> Layout:
    """A screen's layout from its catalog seats and focal point (None: the defaults;
    a focal row the screen does not have is the default too)."""
    by_row: dict[str, list[CatalogSeat]] = {}
    for seat in seats:
        by_row.setdefault(seat.row, []).append(seat)
    labels = sorted(by_row, key=row_order)
    rows = tuple(tuple(sorted((Place(s.seat_id, index, s.position, s.category, s.accessible)
                               for s in by_row[label]), key=lambda p: (p.position, p.seat_id)))
                 for index, label in enumerate(labels))
    fr = labels.index(focal_row) if focal_row in by_row else default_focal_row(len(rows))
    if focal_seat is not None:
        fx2 = round(2 * focal_seat)
    elif rows:
        fx2 = rows[fr][0].position + rows[fr][-1].position
    else:
        fx2 = 0
    return Layout(rows, fr, fx2)


@dataclass(frozen=True)
class Choice:
    seats: tuple[str, ...]  # sorted by seat id
    shape: int
    orphan: bool


def _alone(row: tuple[Place, ...], i: int, free: Collection[str]) -> bool:
    """Whether row[i] has no free neighbour (an aisle or a row's end is none)."""
    pos = row[i].position
    left = i > 0 and row[i - 1].position == pos - 1 and row[i - 1].seat_id in free
    right = (i + 1 < len(row) and row[i + 1].position == pos + 1
             and row[i + 1].seat_id in free)
    return not (left or right)


def _orphans_beside(row: tuple[Place, ...], first: int, last: int,
                    free: Collection[str]) -> bool:
    """Whether taking row[first..last] (consecutive in the row) leaves the free seat
    just left or right of it alone: its other neighbour is not free."""
    if first > 0 and row[first - 1].position == row[first].position - 1 \
            and row[first - 1].seat_id in free:
        j = first - 1
        if not (j > 0 and row[j - 1].position == row[j].position - 1
                and row[j - 1].seat_id in free):
            return True
    if last + 1 < len(row) and row[last + 1].position == row[last].position + 1 \
            and row[last + 1].seat_id in free:
        j = last + 1
        if not (j + 1 < len(row) and row[j + 1].position == row[j].position + 1
                and row[j + 1].seat_id in free):
            return True
    return False


def choose(layout: Layout, free: Collection[str], count: int, *, category: str | None = None,
           accessible: bool = False, allow_split: bool = False) -> Choice | None:
    """The best `count` seats among `free` (the rule above), or None if there is no block
    of that size (nor, with `allow_split`, that many eligible seats)."""
    if count < 1:
        return None

    def eligible(p: Place) -> bool:
        return (p.seat_id in free and (category is None or p.category == category)
                and (not accessible or p.accessible))

    best: tuple[int, int, int] | None = None
    seats: list[Place] = []

    def offer(key: tuple[int, int, int], places: list[Place]) -> None:
        nonlocal best, seats
        if best is None or key < best:  # strictly: the first of equal keys stays
            best, seats = key, places

    ok_rows = [[eligible(p) for p in row] for row in layout.rows]
    for row, ok in zip(layout.rows, ok_rows, strict=True):
        for i in range(len(row) - count + 1):
            if not all(ok[i:i + count]):
                continue
            gaps = any(row[k + 1].position != row[k].position + 1 for k in range(i, i + count - 1))
            orphan = _orphans_beside(row, i, i + count - 1, free)
            offer((int(orphan), ACROSS_AISLE if gaps else ONE_SECTION,
                   sum(layout.cost(p) for p in row[i:i + count])), list(row[i:i + count]))
    if count > 1 and (best is None or best[0] == 1):
        for r in range(len(layout.rows) - 1):
            front, back = layout.rows[r], layout.rows[r + 1]
            ok_front, ok_back = ok_rows[r], ok_rows[r + 1]
            at = {p.position: k for k, p in enumerate(back)}
            for i in range(len(front)):
                for a in range(min(count - 1, len(front) - i), 0, -1):
                    if not _section_run(front, ok_front, i, a):
                        continue
                    b = count - a
                    start = front[i].position
                    for q in range(start - b + 1, start + a):
                        k = at.get(q)
                        if k is None or not _section_run(back, ok_back, k, b):
                            continue
                        orphan = (_orphans_beside(front, i, i + a - 1, free)
                                  or _orphans_beside(back, k, k + b - 1, free))
                        places = list(front[i:i + a]) + list(back[k:k + b])
                        offer((int(orphan), TWO_ROWS, sum(layout.cost(p) for p in places)),
                              places)
    if best is None and allow_split:
        pool = sorted((p for row in layout.rows for p in row if eligible(p)),
                      key=lambda p: (layout.cost(p), p.row, p.position, p.seat_id))
        if len(pool) >= count:
            best, seats = (2, SPLIT, 0), pool[:count]
    if best is None:
        return None
    return Choice(tuple(sorted(p.seat_id for p in seats)), best[1], best[0] == 1)


def _section_run(row: tuple[Place, ...], ok: list[bool], i: int, n: int) -> bool:
    """Whether row[i..i+n-1] exists, is all eligible, and has no aisle inside."""
    if i + n > len(row):
        return False
    return all(ok[i:i + n]) and all(row[k + 1].position == row[k].position + 1
                                    for k in range(i, i + n - 1))


def orphans(layout: Layout, free: Collection[str], taking: Collection[str]) -> list[str]:
    """The free seats that taking `taking` would leave alone (no free neighbour) and that
    were not alone before: the orphans of a manual pick, sorted."""
    after = {s for s in free if s not in taking}
    found = []
    for row in layout.rows:
        if not any(p.seat_id in taking for p in row):
            continue
        for i, p in enumerate(row):
            if p.seat_id in after and _alone(row, i, after) and not _alone(row, i, free):
                found.append(p.seat_id)
    return sorted(found)


def decode(fields: dict[str, str]) -> Layout:
    """`Layout.encode` read back."""
    cats = fields["cats"].split("\n")
    rows = []
    for r in range(int(fields["n"])):
        ids, codes = fields[f"r{r + 1}"].split("\t")
        rows.append(tuple(
            Place(seat, r, (ord(codes[4 * i]) - 48) * 64 + ord(codes[4 * i + 1]) - 48,
                  cats[ord(codes[4 * i + 2]) - 48], codes[4 * i + 3] == "1")
            for i, seat in enumerate(ids.split(" "))))
    return Layout(tuple(rows), int(fields["fr"]), int(fields["fx"]))
