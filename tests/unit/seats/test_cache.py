"""The seat cache's rules, on real SeatState values (no Redis needed to state them)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bookcluster.seats.cache import SeatCache
from bookcluster.seats.state import SeatState, now_ms


def state(version: int, **holds: tuple[str, int]) -> SeatState:
    return SeatState(version=version, holds=dict(holds), read_at=0.0)


def msg(version: int, status: str, seats: list[str], **extra: Any) -> dict[str, Any]:
    return {"show": 1, "version": version, "status": status, "seats": seats,
            "booking": "b1-00", **extra}


async def filled(cache: SeatCache, initial: SeatState) -> None:
    async def load(_: int) -> SeatState:
        return initial
    await cache.get(1, load)


async def test_next_version_patches_old_is_ignored_gap_drops() -> None:
    cache = SeatCache()
    await filled(cache, state(5))
    exp = now_ms() + 60_000
    assert cache.apply(msg(6, "LOCKED", ["A1", "A2"], expires_at=exp)) == "patched"
    entry = cache.peek(1)
    assert entry is not None and entry.state.version == 6
    assert entry.state.status("A1", now_ms()) == "LOCKED"
    assert cache.apply(msg(6, "AVAILABLE", ["A1"])) == "stale"
    assert cache.apply(msg(7, "BOOKED", ["A1"])) == "patched"
    entry = cache.peek(1)
    assert entry is not None and entry.state.status("A1", now_ms()) == "BOOKED"
    assert cache.apply(msg(9, "AVAILABLE", ["A2"])) == "dropped"  # 8 was missed
    assert cache.peek(1) is None
    assert cache.apply(msg(10, "AVAILABLE", ["A2"])) == "absent"


async def test_reset_drops() -> None:
    cache = SeatCache()
    await filled(cache, state(3))
    assert cache.apply(msg(4, "RESET", [])) == "dropped"


def test_expired_hold_reads_available_without_a_message() -> None:
    at = now_ms()
    s = state(1, A1=("b1-00", at + 1000), A2=("b1-00", at - 1))
    assert s.status("A1", at) == "LOCKED"
    assert s.status("A2", at) == "AVAILABLE"
    assert s.status("A1", at + 1000) == "AVAILABLE"


async def test_single_flight_and_replay_of_messages_during_the_fill() -> None:
    cache = SeatCache()
    reads = 0
    release = asyncio.Event()

    async def slow_load(_: int) -> SeatState:
        nonlocal reads
        reads += 1
        await release.wait()
        return state(10)

    waiters = [asyncio.create_task(cache.get(1, slow_load)) for _ in range(500)]
    await asyncio.sleep(0)
    assert cache.apply(msg(11, "LOCKED", ["B1"], expires_at=now_ms() + 60_000)) == "filling"
    assert cache.apply(msg(10, "AVAILABLE", ["B2"])) == "filling"  # older than the read
    release.set()
    results = await asyncio.gather(*waiters)
    assert reads == 1
    assert {entry.state.version for entry, _ in results} == {11}
    assert sum(1 for _, hit in results if not hit) == 1


async def test_gap_during_fill_reads_again() -> None:
    cache = SeatCache()
    versions = iter([10, 13])
    release = asyncio.Event()

    async def load(_: int) -> SeatState:
        await release.wait()
        return state(next(versions))

    task = asyncio.create_task(cache.get(1, load))
    await asyncio.sleep(0)
    cache.apply(msg(12, "AVAILABLE", ["C1"]))  # 11 never arrives
    release.set()
    entry, _ = await task
    assert entry.state.version == 13


async def test_size_cap_evicts_least_recently_used() -> None:
    evicted = []
    cache = SeatCache(capacity=3, on_evict=lambda: evicted.append(1))

    async def load(show: int) -> SeatState:
        return state(show)

    for show in (1, 2, 3):
        await cache.get(show, load)
    await cache.get(1, load)  # 1 is now the most recent
    await cache.get(4, load)
    assert len(cache) == 3 and len(evicted) == 1
    assert cache.peek(2) is None and cache.peek(1) is not None


async def test_failed_fill_is_reported_to_every_waiter() -> None:
    cache = SeatCache()
    gate = asyncio.Event()

    async def failing(_: int) -> SeatState:
        await gate.wait()
        raise ConnectionError("replica down")

    tasks = [asyncio.create_task(cache.get(1, failing)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    for task in tasks:
        with pytest.raises(ConnectionError):
            await task
    assert cache.peek(1) is None


async def test_a_refunded_sale_reads_available_and_leaves_other_sales_alone() -> None:
    cache = SeatCache()
    await filled(cache, SeatState(version=5, booked={"A1": "b1-00", "A2": "b2-00"},
                                  read_at=0.0))
    # The UNBOOK script's change: AVAILABLE for seats the booking had bought.
    assert cache.apply(msg(6, "AVAILABLE", ["A1", "A2"])) == "patched"
    entry = cache.peek(1)
    assert entry is not None
    assert entry.state.status("A1", now_ms()) == "AVAILABLE"
    assert entry.state.status("A2", now_ms()) == "BOOKED"  # another booking's sale
