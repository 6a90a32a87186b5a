"""Write admission: a bounded number run, a bounded number wait in order, the rest shed."""

from __future__ import annotations

import asyncio

import pytest

from bookcluster.errors import Overloaded, RateLimited
from bookcluster.metrics import NodeMetrics
from bookcluster.node.admission import MIN_WORK_S, WriteAdmission
from bookcluster.stores import deadline


async def test_writes_beyond_the_slots_wait_in_order_and_a_full_queue_sheds() -> None:
    metrics = NodeMetrics("north")
    admission = WriteAdmission(metrics, in_flight=2, queued=2)
    order: list[int] = []
    release = asyncio.Event()

    async def write(i: int) -> None:
        with deadline.running(deadline.Deadline.after(30)):
            async with admission.admit():
                order.append(i)
                await release.wait()

    running = [asyncio.ensure_future(write(i)) for i in range(4)]
    await asyncio.sleep(0.05)
    assert order == [0, 1]  # two run, two wait
    assert metrics.writes_waiting.collect()[0].samples[0].value == 2
    with pytest.raises(Overloaded) as shed:
        await write(4)
    assert shed.value.status == 503 and shed.value.headers["Retry-After"] == "1"
    assert shed.value.body()["outcome"] == "not_applied"
    release.set()
    await asyncio.gather(*running)
    assert order == [0, 1, 2, 3]
    assert metrics.writes_shed.labels("north", "queue_full")._value.get() == 1


async def test_a_write_that_cannot_be_admitted_before_its_deadline_is_shed() -> None:
    metrics = NodeMetrics("north")
    admission = WriteAdmission(metrics, in_flight=1, queued=10)
    release = asyncio.Event()

    async def hog() -> None:
        with deadline.running(deadline.Deadline.after(30)):
            async with admission.admit():
                await release.wait()

    running = asyncio.ensure_future(hog())
    await asyncio.sleep(0.01)
    with deadline.running(deadline.Deadline.after(MIN_WORK_S + 0.2)), \
            pytest.raises(Overloaded, match="deadline"):
        async with admission.admit():
            raise AssertionError("admitted although the slot stayed taken")
    assert metrics.writes_shed.labels("north", "deadline")._value.get() == 1
    release.set()
    await running
    async with asyncio.timeout(1), admission.admit():  # the slot was handed back
        pass


async def test_one_users_writes_beyond_its_share_are_refused_before_they_wait() -> None:
    metrics = NodeMetrics("north")
    admission = WriteAdmission(metrics, in_flight=1, queued=100, per_user=3)
    release = asyncio.Event()

    async def write(user: str) -> None:
        with deadline.running(deadline.Deadline.after(30)):
            async with admission.admit(user, "10.0.0.1"):
                await release.wait()

    running = [asyncio.ensure_future(write("flooder")) for _ in range(3)]
    await asyncio.sleep(0.01)
    with pytest.raises(RateLimited) as refused:
        await write("flooder")
    assert refused.value.body()["limit"] == "user_writes_at_once"
    other = asyncio.ensure_future(write("someone"))  # waits its turn, is not refused
    await asyncio.sleep(0.01)
    assert metrics.writes_waiting.collect()[0].samples[0].value == 3
    release.set()
    await asyncio.gather(*running, other)
    async with admission.admit("flooder", "10.0.0.1"):  # its share came back
        pass


async def test_addresses_take_turns_and_a_full_queue_pushes_out_the_longest() -> None:
    metrics = NodeMetrics("north")
    admission = WriteAdmission(metrics, in_flight=1, queued=4, per_user=100)
    order: list[str] = []
    gate = asyncio.Event()

    async def write(address: str, tag: str) -> None:
        with deadline.running(deadline.Deadline.after(30)):
            async with admission.admit(tag, address):
                order.append(tag)
                await gate.wait()

    hog = asyncio.ensure_future(write("a", "a0"))
    await asyncio.sleep(0.01)
    many = [asyncio.ensure_future(write("a", f"a{i}")) for i in range(1, 5)]  # queue full
    await asyncio.sleep(0.01)
    late = asyncio.ensure_future(write("b", "b1"))  # pushes out a4, the newest of "a"
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded, match="pushed out"):
        await many[3]
    with pytest.raises(Overloaded, match="already wait"):  # "a" has most: refused itself
        await write("a", "a5")
    gate.set()
    await asyncio.gather(hog, *many[:3], late)
    assert order == ["a0", "a1", "b1", "a2", "a3"]  # b's turn came after one of a's
    assert metrics.writes_shed.labels("north", "pushed_out")._value.get() == 1
    assert metrics.writes_waiting.collect()[0].samples[0].value == 0
