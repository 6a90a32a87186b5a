"""`cancel_and_wait` ends a task even when its first cancellation is swallowed."""

from __future__ import annotations

import asyncio

from bookcluster.loops import cancel_and_wait


async def test_a_task_that_swallows_one_cancel_is_cancelled_again() -> None:
    swallowed: list[bool] = []

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if not swallowed:  # as Python 3.11's wait_for does when its inner
                    swallowed.append(True)  # awaitable finished at the same moment
                    continue
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await cancel_and_wait([task], again_after_s=0.05)
    assert swallowed and task.cancelled()


async def test_finished_tasks_are_left_as_they_are() -> None:
    done = asyncio.create_task(asyncio.sleep(0, result=7))
    await done
    await cancel_and_wait([done])
    assert done.result() == 7
