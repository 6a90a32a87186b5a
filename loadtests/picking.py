"""What a simulated user picks: regions from a weighted mix, and seats from a seat map.

Plain functions without locust, so they can be read and tried on their own.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

MAX_SEATS = 6  # per booking attempt; the service allows up to max_seats_per_booking
ADJACENT_SHARE = 0.85  # how often a user wants seats side by side
# Half of those want the start of one of the same few blocks (the first runs
# of free seats that fit, in row order), as people eyeing the best seats do.
FAVOURITE_RUNS = 3
FAVOURITE_SHARE = 0.5


def parse_mix(text: str, regions: Sequence[str], option: str) -> dict[str, float]:
    """'north=2,south=1' -> {'north': 2.0, 'south': 1.0}; empty -> every region at 1."""
    if not text.strip():
        return dict.fromkeys(regions, 1.0)
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, sep, weight = part.strip().partition("=")
        if not sep or name not in regions:
            raise ValueError(f"{option}: expected region=weight with a region of "
                             f"{', '.join(regions)}, got {part.strip()!r}")
        try:
            mix[name] = float(weight)
        except ValueError:
            raise ValueError(f"{option}: weight of {name} is not a number: {weight!r}") from None
        if mix[name] < 0:
            raise ValueError(f"{option}: weight of {name} is negative")
    if not any(mix.values()):
        raise ValueError(f"{option}: at least one weight must be positive")
    return mix


def share(value: Any, option: str) -> float:
    """A probability given on the command line, checked to lie in 0..1."""
    fraction = float(value)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"{option}: expected a share in 0..1, got {value}")
    return fraction


def weighted(rng: random.Random, mix: Mapping[str, float]) -> str:
    names = list(mix)
    return rng.choices(names, weights=[mix[n] for n in names])[0]


def choose_seats(rng: random.Random, seats: list[dict[str, Any]],
                 want: int | None = None) -> list[str]:
    """1..MAX_SEATS available seat ids (`want` of them if given, fewer if fewer are free):
    mostly a run of neighbours when one fits, else any."""
    free = [s for s in seats if s.get("status") == "AVAILABLE"]
    if not free:
        return []
    want = min(rng.randint(1, MAX_SEATS) if want is None else want, len(free))
    if rng.random() < ADJACENT_SHARE:
        runs = [run for run in _runs(free) if len(run) >= want]
        if runs and rng.random() < FAVOURITE_SHARE:
            return rng.choice(runs[:FAVOURITE_RUNS])[:want]
        if runs:
            run = rng.choice(runs)
            start = rng.randint(0, len(run) - want)
            return run[start:start + want]
    return [s["seat_id"] for s in rng.sample(free, want)]


def _runs(free: list[dict[str, Any]]) -> list[list[str]]:
    """Maximal runs of consecutive seat numbers within a row."""
    runs: list[list[str]] = []
    last: tuple[str, int] | None = None
    for seat in sorted(free, key=lambda s: (s["row"], s["number"])):
        if last is not None and last == (seat["row"], seat["number"] - 1):
            runs[-1].append(seat["seat_id"])
        else:
            runs.append([seat["seat_id"]])
        last = (seat["row"], seat["number"])
    return runs
