#!/usr/bin/env python3
"""CPU per seat-map render of a 1,000-seat show: the node's cached map body, rendered
anew whenever the show changes (`bookcluster/seats/maps.py::seat_map_body`). No servers;
one process, one core.

    .venv/bin/python loadtests/seatmap_render.py [--rounds 2000] [--taken 0.3]

Compares the dict rendering passed to `json.dumps` (the path before
`bookcluster/seats/mapjson.py`), the same dict passed to msgspec, and the spliced
per-seat pieces of `mapjson.encode_map` (what the node does now). `--taken` is the
share of seats held, booked or blocked. Prints microseconds of CPU (process time) per
render, best of 5 rounds.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from bookcluster.catalog import SeatInfo, ShowInfo
from bookcluster.seats import maps
from bookcluster.seats.mapjson import encode_map
from bookcluster.seats.state import SeatState, now_ms

SHOW = ShowInfo(7, "t-1", "s-1", "Audi 1", "m-1", "Jawan", "Hindi", "UA", 169,
                datetime(2026, 11, 24, 13, 0, tzinfo=UTC), "west")
LAYOUT = tuple(SeatInfo(f"{row}{n}", row, n, "GOLD" if row < "E" else "SILVER",
               25000 if row < "E" else 18000, False) for row in "ABCDEFGHIJ" for n in range(1, 101))


def state_with(taken: float, at: int) -> SeatState:
    rng = random.Random(1)
    picked = rng.sample([s.seat_id for s in LAYOUT], int(len(LAYOUT) * taken))
    third = len(picked) // 3
    return SeatState(version=42, holds={s: ("b1", at + 600_000) for s in picked[:third]},
                     booked={s: "b2" for s in picked[third:2 * third]},
                     blocked=frozenset(picked[2 * third:]))


def cpu_us(fn: Callable[[], Any], rounds: int) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(rounds):
            fn()
        best = min(best, (time.process_time() - started) / rounds * 1e6)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2000)
    p.add_argument("--taken", type=float, default=0.3)
    args = p.parse_args()
    at = now_ms()
    state = state_with(args.taken, at)
    renderer: Any = object.__new__(maps.SeatMaps)  # _render reads nothing of the instance

    def as_dict() -> dict[str, Any]:
        rendered: dict[str, Any] = renderer._render(SHOW, state, 0.0, "cache@west", LAYOUT)
        return rendered

    head = renderer._head(SHOW, state, 0.0, "cache@west")
    new = encode_map(head, state, LAYOUT, at)
    assert json.loads(new) == json.loads(json.dumps(as_dict()))
    figures = {
        "json.dumps(dict)": cpu_us(lambda: json.dumps(as_dict()).encode(), args.rounds),
        "msgspec(dict)": cpu_us(lambda: msgspec.json.encode(as_dict()), args.rounds),
        "mapjson.encode_map": cpu_us(lambda: encode_map(head, state, LAYOUT, now_ms()),
                                     args.rounds),
    }
    print(f"1,000-seat map, {args.taken:.0%} taken, us of CPU per render (best of 5 x "
          f"{args.rounds}):")
    for name, us in figures.items():
        print(f"  {name:22} {us:8.1f}")


if __name__ == "__main__":
    main()
