"""The shared batcher (`booking/batcher.py`) without a server: which queued items go in
the next call, the deadline it runs under, how calls are coalesced and bounded, and what
callers learn when a call fails, is cancelled, or answers a caller that gave up."""

from __future__ import annotations

import asyncio
import time

import pytest

from bookcluster.booking.batcher import Batcher, Queued, earliest, take
from bookcluster.stores import deadline
from bookcluster.stores.deadline import Deadline
from bookcluster.topology.errors import RegionUnavailable


def queued(loop: asyncio.AbstractEventLoop, n: int, at: float = 100.0) -> Queued[str, int]:
    return Queued(f"b{n}", Deadline(at), loop.create_future())


def test_take_skips_callers_that_gave_up_and_keeps_arrival_order() -> None:
    loop = asyncio.new_event_loop()
    try:
        queue = [queued(loop, n) for n in range(6)]
        queue[1].future.cancel()
        queue[4].future.set_result(4)
        batch, rest = take(queue, 3)
        assert [q.item for q in batch] == ["b0", "b2", "b3"]
        assert [q.item for q in rest] == ["b5"]
        batch, rest = take(rest, 3)
        assert [q.item for q in batch] == ["b5"] and rest == []
    finally:
        loop.close()


def test_a_batch_runs_under_its_earliest_deadline() -> None:
    assert earliest([Deadline(5.0), Deadline(3.0), Deadline(4.0)]) == Deadline(3.0)


async def settle() -> None:
    """Let the submits, the flush and the calls' first steps run."""
    for _ in range(5):
        await asyncio.sleep(0)


class Doubler(Batcher[int, int]):
    """Answers each item doubled; a call waits for `gate` so tests see what queues."""

    def __init__(self, *, max_items: int = 4, max_in_flight: int = 1) -> None:
        super().__init__("north", max_items=max_items, max_in_flight=max_in_flight)
        self.calls: list[list[int]] = []
        self.deadlines: list[float] = []
        self.gate = asyncio.Event()
        self.fail: BaseException | None = None
        self.orphans: list[tuple[int, int]] = []

    async def _call(self, items: list[int]) -> list[int]:
        self.calls.append(items)
        self.deadlines.append(deadline.current().at)
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return [2 * i for i in items]

    async def _orphaned(self, item: int, answer: int) -> None:
        self.orphans.append((item, answer))


async def test_one_loop_turn_is_one_call_and_batches_grow_while_one_is_on_its_way() -> None:
    b = Doubler(max_items=4, max_in_flight=1)
    first = [asyncio.ensure_future(b.submit(i)) for i in range(3)]
    await settle()
    assert b.calls == [[0, 1, 2]]  # the three of one turn, in one call
    later = [asyncio.ensure_future(b.submit(i)) for i in range(3, 9)]
    await settle()
    assert b.calls == [[0, 1, 2]]  # at most one on its way: the rest waits
    b.gate.set()
    assert await asyncio.gather(*first, *later) == [2 * i for i in range(9)]
    assert b.calls == [[0, 1, 2], [3, 4, 5, 6], [7, 8]]  # at most max_items a call
    assert (b.batches_total, b.items_total) == (3, 9)


async def test_an_expired_item_is_refused_unsent_and_the_call_runs_under_the_earliest() -> None:
    b = Doubler()
    b.gate.set()
    soon = time.time() + 30
    with deadline.running(Deadline(time.time() - 1)):
        late = asyncio.ensure_future(b.submit(1))
    with deadline.running(Deadline(soon + 10)):
        a = asyncio.ensure_future(b.submit(2))
    with deadline.running(Deadline(soon)):
        c = asyncio.ensure_future(b.submit(3))
    assert await asyncio.gather(a, c) == [4, 6]
    with pytest.raises(RegionUnavailable) as refused:
        await late
    assert refused.value.outcome == "not_applied"
    assert b.calls == [[2, 3]] and b.deadlines == [soon]


async def test_a_failed_call_reaches_every_caller_and_a_cancelled_one_is_unknown() -> None:
    b = Doubler(max_in_flight=2)
    b.fail = RegionUnavailable("north", "postgres primary", outcome="unknown")
    b.gate.set()
    calls = [asyncio.ensure_future(b.submit(i)) for i in range(2)]
    for c in calls:
        with pytest.raises(RegionUnavailable):
            await c
    b2 = Doubler()
    pending = asyncio.ensure_future(b2.submit(1))
    await settle()
    b2.terminate()
    with pytest.raises(RegionUnavailable) as lost:
        await pending
    assert lost.value.outcome == "unknown"  # it may have committed
    with pytest.raises(RegionUnavailable):
        await b2.submit(2)  # closed: refused, nothing sent
    assert b2.calls == [[1]]
    b3 = Doubler()
    never_ran = asyncio.ensure_future(b3.submit(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the flush made the call's task; it has not started
    b3.terminate()
    with pytest.raises(RegionUnavailable):
        await never_ran  # not left waiting forever
    assert b3.calls == []


async def test_an_answer_for_a_caller_that_gave_up_goes_to_the_hook() -> None:
    b = Doubler()
    gone = asyncio.ensure_future(b.submit(5))
    stays = asyncio.ensure_future(b.submit(6))
    await settle()
    gone.cancel()
    b.gate.set()
    assert await stays == 12
    assert b.orphans == [(5, 10)]


async def test_close_refuses_what_is_queued_and_lets_the_call_on_its_way_end() -> None:
    b = Doubler(max_in_flight=1)
    on_way = asyncio.ensure_future(b.submit(1))
    await settle()
    queued_ = asyncio.ensure_future(b.submit(2))
    await settle()
    closing = asyncio.ensure_future(b.close())
    await settle()
    b.gate.set()
    await closing
    assert await on_way == 2
    with pytest.raises(RegionUnavailable):
        await queued_
    assert b.calls == [[1]]
