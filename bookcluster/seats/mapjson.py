"""A seat map's JSON bytes, spliced from per-seat pieces encoded once per layout.

The map of a 1,000-seat show was a dict of 1,000 dicts passed to `json.dumps`
on every change of the show. A seat's entry differs between two maps only by its
status, one of four, so each layout keeps every seat's entry encoded (msgspec)
once per status, and a map is its header, the layout's all-AVAILABLE pieces and
one lookup per seat that is not available: the same JSON document as before (same
seat keys in the same order; compact separators; `counts` may list its keys in
another order).
Measured in `loadtests/seatmap_render.py`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from bookcluster.catalog import SeatInfo
from bookcluster.seats.state import SeatState

STATUSES = ("AVAILABLE", "LOCKED", "BOOKED", "UNAVAILABLE")
LAYOUTS_KEPT = 256  # screens; past this the pieces are encoded afresh

_encode = msgspec.json.Encoder().encode


class _Pieces:
    """One layout's seat entries, encoded per status."""

    __slots__ = ("by_status", "index", "layout")

    def __init__(self, layout: tuple[SeatInfo, ...]) -> None:
        self.layout = layout
        self.index = {seat.seat_id: i for i, seat in enumerate(layout)}
        self.by_status = {status: [_encode(
            {"seat_id": s.seat_id, "row": s.row, "number": s.number, "category": s.category,
             "price_paise": s.price_paise, "position": s.position,
             "accessible": s.accessible, "status": status}) for s in layout]
            for status in STATUSES}


_pieces: dict[int, _Pieces] = {}  # id(layout) -> its pieces, while that layout lives


def _pieces_of(layout: tuple[SeatInfo, ...]) -> _Pieces:
    pieces = _pieces.get(id(layout))
    if pieces is None or pieces.layout is not layout:
        if len(_pieces) >= LAYOUTS_KEPT:
            _pieces.clear()
        pieces = _pieces[id(layout)] = _Pieces(layout)
    return pieces


def encode_map(head: dict[str, Any], state: SeatState, layout: tuple[SeatInfo, ...],
               at_ms: int) -> bytes:
    """`{**head, "counts": …, "seats": […]}` as JSON: each seat of `layout` with its
    status at `at_ms` (`SeatState.status`), and how many seats have each status."""
    pieces = _pieces_of(layout)
    index, encoded = pieces.index, pieces.by_status
    # Seats not AVAILABLE, by position; later statuses win, as in `SeatState.status`.
    taken: dict[int, str] = {}
    for seat, (_, expires) in state.holds.items():
        if expires > at_ms and seat in index:
            taken[index[seat]] = "LOCKED"
    for seats, status in ((state.booked, "BOOKED"), (state.blocked, "UNAVAILABLE")):
        for seat in seats:
            if seat in index:
                taken[index[seat]] = status
    parts = encoded["AVAILABLE"]
    counts: dict[str, int] = {}
    if taken:
        parts = parts.copy()
        for i, status in taken.items():
            parts[i] = encoded[status][i]
        counts = dict(Counter(taken.values()))
    if len(parts) > len(taken):
        counts = {"AVAILABLE": len(parts) - len(taken), **counts}
    start = _encode({**head, "counts": counts})
    return b"".join((start[:-1], b',"seats":[', b",".join(parts), b"]}"))
