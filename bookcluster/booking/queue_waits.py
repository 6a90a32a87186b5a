"""How long an on-sale's admitted users waited, and how many abandoned, pure logic.

A user's wait runs from the sale's start (an early joiner: their place was drawn then)
or their join (a later one) to the admission step that reached their place. The home
region's admitter adds each step's waits (`Waits.add`); after a worker restart or a
theatre move it first reads all of them again from PostgreSQL (`admitter.py`).

An admitted user abandoned when their shopping window ended and their pass was never
used for a hold. A waiting user who closes the page is not known to anyone (positions
are read in every region, nothing is written per poll): they count when their turn
comes and their window passes unused.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

from bookcluster.booking.queue_order import place

INSERT_UP_TO = 64  # a batch larger than this is sorted in, not inserted one by one


@dataclass
class Waits:
    """Every admitted user's wait, sorted (8 bytes each: 200,000 are 1.6 MB)."""

    seconds: array[float] = field(default_factory=lambda: array("d"))

    def add(self, waits: Iterable[float]) -> None:
        batch = [max(0.0, waited) for waited in waits]
        if len(batch) > INSERT_UP_TO:  # all of them at once (a restart's read): one sort
            self.seconds = array("d", sorted([*self.seconds, *batch]))
            return
        for waited in batch:  # a round's few: each in its place
            bisect.insort(self.seconds, waited)

    def quantile(self, q: float) -> float | None:
        """The nearest-rank quantile `q` in (0, 1]; None before anyone was admitted."""
        if not self.seconds:
            return None
        rank = max(1, -(-int(q * 1000) * len(self.seconds) // 1000))  # ceil(q * n)
        return self.seconds[min(rank, len(self.seconds)) - 1]


def abandoned(expired_frontier: int, used_seqs: Iterable[int], seed: int | None,
              n_early: int | None) -> int:
    """Users among places [0, expired_frontier) (admitted a whole window ago or more)
    whose pass was not used: the passes used are given by their users' join `seq`."""
    used = 0
    for seq in used_seqs:
        at = place(seq, seed, n_early)
        if at is not None and at < expired_frontier:
            used += 1
    return max(0, expired_frontier - used)
