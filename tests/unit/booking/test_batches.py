"""The pure parts of the hold batcher: which queued holds go in the next call, and the
deadline it runs under."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from bookcluster.booking import ledger
from bookcluster.booking.batches import _Queued, earliest, take
from bookcluster.stores.deadline import Deadline


def queued(loop: asyncio.AbstractEventLoop, n: int, at: float = 100.0) -> _Queued:
    item = ledger.HoldItem(show=1, seats=[f"A{n}"], booking=f"b{n}", user=f"u{n}",
                           expires=datetime.now(UTC), prices=[1], hold_key=None, epoch=1,
                           address=None)
    return _Queued(item, Deadline(at), loop.create_future())


def test_take_skips_callers_that_gave_up_and_keeps_arrival_order() -> None:
    loop = asyncio.new_event_loop()
    try:
        queue = [queued(loop, n) for n in range(6)]
        queue[1].future.cancel()
        queue[4].future.set_result(ledger.HoldRecord(None, [], None, False))
        batch, rest = take(queue, 3)
        assert [q.item.booking for q in batch] == ["b0", "b2", "b3"]
        assert [q.item.booking for q in rest] == ["b5"]
        batch, rest = take(rest, 3)
        assert [q.item.booking for q in batch] == ["b5"] and rest == []
    finally:
        loop.close()


def test_a_batch_runs_under_its_earliest_deadline() -> None:
    assert earliest([Deadline(5.0), Deadline(3.0), Deadline(4.0)]) == Deadline(3.0)
