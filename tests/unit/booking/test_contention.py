"""Early refusal's verdict (`contention.taken`): which seats a read of the home master
shows taken, and when it cannot say. A seat it calls taken must be one the hold script
would refuse at that instant; anything closer to the clock margin stays undecided."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from bookcluster.booking.contention import CLOCK_MARGIN_MS, SeatTurns, SharedReads, taken
from bookcluster.seats.state import SeatState

NOW = 1_800_000_000_000  # ms


def state(holds: dict[str, int] | None = None, booked: tuple[str, ...] = (),
          blocked: tuple[str, ...] = ()) -> SeatState:
    return SeatState(version=7,
                     holds={seat: (f"b1-{i:016x}", ends) for i, (seat, ends)
                            in enumerate((holds or {}).items())},
                     booked={seat: "b1-00000000000000aa" for seat in booked},
                     blocked=frozenset(blocked))


def test_free_seats_are_not_taken() -> None:
    assert taken(state(), ["A1", "A2"], NOW) == []


def test_booked_and_blocked_seats_are_taken_in_the_order_asked() -> None:
    seen = state(booked=("A2",), blocked=("A5",))
    assert taken(seen, ["A5", "A1", "A2"], NOW) == ["A5", "A2"]


def test_a_hold_ending_well_after_now_takes_the_seat() -> None:
    seen = state({"A1": NOW + CLOCK_MARGIN_MS + 1})
    assert taken(seen, ["A1", "A2"], NOW) == ["A1"]


def test_a_hold_that_ended_well_before_now_leaves_the_seat_free() -> None:
    seen = state({"A1": NOW - CLOCK_MARGIN_MS})
    assert taken(seen, ["A1"], NOW) == []


@pytest.mark.parametrize("offset", [-CLOCK_MARGIN_MS + 1, -1, 0, 1, CLOCK_MARGIN_MS])
def test_a_hold_ending_within_the_clock_margin_is_undecided(offset: int) -> None:
    """The node's clock may be off by the margin: the master may see it either way."""
    seen = state({"A1": NOW + offset}, booked=("A2",))
    assert taken(seen, ["A2", "A1"], NOW) is None
    assert taken(seen, ["A1", "A2"], NOW) is None


def test_a_hold_on_a_seat_not_asked_for_changes_nothing() -> None:
    seen = state({"B9": NOW + 10 * CLOCK_MARGIN_MS}, booked=("B8",))
    assert taken(seen, ["A1"], NOW) == []



def test_without_a_time_the_nodes_clock_is_used() -> None:
    """A hold ending an hour from the real now is taken; one that ended an hour ago is not."""
    real_now = int(time.time() * 1000)
    seen = state({"A1": real_now + 3_600_000, "A2": real_now - 3_600_000})
    assert taken(seen, ["A1", "A2"]) == ["A1"]


# -- turns: one hold of a seat at a time on a node ------------------------------------

async def test_a_turn_blocks_holds_of_its_seats_only() -> None:
    turns = SeatTurns()
    assert turns.going_on(7, ["A1"]) == set()
    mine = turns.take(7, ["A1", "A2"])
    assert turns.going_on(7, ["A2", "A3"]) == {mine}
    assert turns.going_on(7, ["A3"]) == set()
    assert turns.going_on(8, ["A1"]) == set()  # the same seat of another show
    other = turns.take(7, ["A3"])
    assert turns.going_on(7, ["A1", "A3"]) == {mine, other}


async def test_ending_a_turn_wakes_its_waiters_and_forgets_the_show() -> None:
    turns = SeatTurns()
    mine = turns.take(7, ["A1", "A2"])
    other = turns.take(7, ["B1"])
    waiter = asyncio.ensure_future(asyncio.wait(turns.going_on(7, ["A2"])))
    await asyncio.sleep(0)
    assert not waiter.done()
    turns.done(7, ["A1", "A2"], mine)
    await waiter
    assert mine.done() and not other.done()
    assert turns.going_on(7, ["A1", "A2"]) == set() and len(turns) == 1
    turns.done(7, ["B1"], other)
    assert len(turns) == 0  # nothing kept for a show with no hold going on


# -- shared master reads ----------------------------------------------------------

class Reads:
    """Reads whose answers the test releases, counting how many started."""

    def __init__(self) -> None:
        self.started: list[asyncio.Future[str | None]] = []

    def read(self) -> Callable[[], Awaitable[str | None]]:
        async def run() -> str | None:
            answer: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
            self.started.append(answer)
            return await answer
        return run


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_callers_that_arrived_before_a_read_started_share_it() -> None:
    shared: SharedReads[str] = SharedReads()
    reads = Reads()
    arrived = shared.started  # all three arrive before any read starts
    callers = [asyncio.ensure_future(shared.get(7, arrived, reads.read())) for _ in range(3)]
    await settle()
    assert len(reads.started) == 1
    reads.started[0].set_result("state-1")
    assert await asyncio.gather(*callers) == ["state-1"] * 3


async def test_a_caller_never_uses_a_read_started_before_it_arrived() -> None:
    shared: SharedReads[str] = SharedReads()
    reads = Reads()
    first = asyncio.ensure_future(shared.get(7, shared.started, reads.read()))
    await settle()
    late = asyncio.ensure_future(shared.get(7, shared.started, reads.read()))  # read 1 runs
    await settle()
    assert len(reads.started) == 1  # the late caller waits for read 1 to end, then reads
    reads.started[0].set_result("before")
    assert await first == "before"
    await settle()
    assert len(reads.started) == 2 and not late.done()
    reads.started[1].set_result("after")
    assert await late == "after"


async def test_reads_of_different_keys_are_not_shared() -> None:
    shared: SharedReads[str] = SharedReads()
    reads = Reads()
    a = asyncio.ensure_future(shared.get(7, 0, reads.read()))
    b = asyncio.ensure_future(shared.get(8, 0, reads.read()))
    await settle()
    assert len(reads.started) == 2
    reads.started[0].set_result("seven")
    reads.started[1].set_result("eight")
    assert (await a, await b) == ("seven", "eight")


async def test_a_failed_read_answers_none_to_everyone_sharing_it() -> None:
    shared: SharedReads[str] = SharedReads()
    reads = Reads()
    callers = [asyncio.ensure_future(shared.get(7, 0, reads.read())) for _ in range(2)]
    await settle()
    reads.started[0].set_result(None)
    assert await asyncio.gather(*callers) == [None, None]


async def test_a_read_that_raises_raises_for_its_reader_and_frees_the_sharers() -> None:
    shared: SharedReads[str] = SharedReads()
    reads = Reads()
    reader = asyncio.ensure_future(shared.get(7, 0, reads.read()))
    await settle()
    sharer = asyncio.ensure_future(shared.get(7, 0, reads.read()))
    await settle()
    reads.started[0].set_exception(RuntimeError("bug"))
    with pytest.raises(RuntimeError):
        await reader
    assert await sharer is None
    # Nothing is left running: the next caller reads afresh.
    after = asyncio.ensure_future(shared.get(7, shared.started, reads.read()))
    await settle()
    reads.started[-1].set_result("fresh")
    assert await after == "fresh" and len(reads.started) == 2
