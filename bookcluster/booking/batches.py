"""Hold records of one event-loop turn to one region, sent to PostgreSQL together.

Most of a primary's CPU per hold is per statement and per commit (planning, executor
start-up, the commit), not per row. `HoldBatcher.record` queues a hold's record; the
holds queued in one loop turn to a region go in ONE call and ONE commit
(`ledger.record_holds`, `bc_record_holds`), each with its own outcome. A batch of one,
the normal case at low load, is today's single statement (`ledger.record_item`).

The queueing, deadlines and failures are the shared `batcher.Batcher`'s:

- At most `MAX_IN_FLIGHT` batches per region are on their way at once, at most
  `MAX_ITEMS` to a call; an item whose deadline passed before its batch is sent is
  refused as a single hold would be; the batch runs under its items' earliest deadline.
- A failure of the call (connection lost, timeout) may have committed: every item's
  caller gets `RegionUnavailable(...).unknown()` (the hold path's `_undo_hold`). A
  transaction the server rolled back (`TransactionAborted`) and any other error reach
  every item's caller as they are. A batch of one fails exactly as the single statement.
- A caller that is cancelled while its batch is on its way: if its hold was recorded
  anyway, it is noted abandoned, so the sweeper expires it instead of leaving the seats
  held in PostgreSQL until the hold's TTL.
"""

from __future__ import annotations

import contextlib

from bookcluster.booking import ledger
from bookcluster.booking.batcher import Batcher
from bookcluster.seats.home import HomeRegion
from bookcluster.stores import deadline
from bookcluster.topology.errors import RegionUnavailable

MAX_ITEMS = 64  # holds per call: bounds the statement and how long its locks are held
MAX_IN_FLIGHT = 4  # calls per region on their way at once, of one process


class HoldBatcher(Batcher[ledger.HoldItem, ledger.HoldRecord]):
    """Coalesces the hold records of one region (one per region and process)."""

    what = "hold batch"

    def __init__(self, home: HomeRegion, region: str, caps: ledger.HoldCaps, *,
                 max_items: int = MAX_ITEMS, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        super().__init__(region, max_items=max_items, max_in_flight=max_in_flight)
        self.home = home
        self.caps = caps

    async def record(self, item: ledger.HoldItem) -> ledger.HoldRecord:
        """Record one hold (with its neighbours of this loop turn); its caller's deadline
        (`deadline.current()`) bounds it."""
        return await self.submit(item)

    async def _call(self, items: list[ledger.HoldItem]) -> list[ledger.HoldRecord]:
        async with self.home.connection(self.region, writes=True) as conn:
            if len(items) == 1:
                return [await ledger.record_item(conn, items[0], self.caps)]
            return await ledger.record_holds(conn, items, self.caps)

    async def _orphaned(self, item: ledger.HoldItem, answer: ledger.HoldRecord) -> None:
        if answer.token is None:  # not recorded: nothing held for nobody
            return
        with deadline.running(None), contextlib.suppress(RegionUnavailable):
            await self.home.abandon(self.region, item.booking)
