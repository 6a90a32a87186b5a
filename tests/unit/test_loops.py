"""The supervised periodic-loop helper (`bookcluster/loops.py`): pure asyncio, no servers.

Pauses go through an injected `sleep` that records them and only yields, so no test
waits for real time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from bookcluster.loops import BACKOFF_CAP_S, STALE_FLOOR_S, Loop, Loops


class Script:
    """A body that follows a script: each entry is an exception to raise, or a result.
    Once the script is played the next round waits (until cancelled): `done` is set."""

    def __init__(self, steps: list[BaseException | bool | None]) -> None:
        self.steps = steps
        self.calls = 0
        self.done = asyncio.Event()

    async def __call__(self) -> bool | None:
        if not self.steps:
            self.done.set()
            await asyncio.Event().wait()
        self.calls += 1
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step


class Pauses:
    """Records every pause; yields to the loop instead of sleeping."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seen.append(seconds)
        await asyncio.sleep(0)


async def run_until_done(loop: Loop, body: Script, pauses: Pauses,
                         on_failure: Callable[[Loop], None] = lambda _: None) -> None:
    task = asyncio.create_task(loop.run(pauses, on_failure))
    await asyncio.wait_for(body.done.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_failing_body_is_retried_with_a_doubling_bounded_pause() -> None:
    body = Script([OSError("down")] * 6 + [None])
    pauses = Pauses()
    loop = Loop("relay", body, interval_s=0.1, backoff_s=0.25, expected=(OSError,))
    await run_until_done(loop, body, pauses)
    assert body.calls == 7
    # 0.25, 0.5, 1, 2, then the cap; the round after a success pauses the interval.
    assert pauses.seen == [0.25, 0.5, 1.0, BACKOFF_CAP_S, BACKOFF_CAP_S, BACKOFF_CAP_S, 0.1]
    assert loop.failures == 6
    assert loop.failed_in_row == 0 and loop.successes == 1


async def test_a_success_resets_the_backoff() -> None:
    body = Script([RuntimeError("a"), RuntimeError("b"), None, RuntimeError("c"), None, None])
    pauses = Pauses()
    loop = Loop("sweeper", body, interval_s=1.0)
    await run_until_done(loop, body, pauses)
    assert pauses.seen == [1.0, 2.0, 1.0, 1.0, 1.0, 1.0]
    assert loop.failures == 3 and loop.failed_in_row == 0


def test_the_cap_is_the_interval_when_the_interval_is_longer() -> None:
    loop = Loop("topology", Script([]), interval_s=5.0)
    loop.failed_in_row = 10
    assert loop.delay() == 5.0
    loop.failed_in_row = 0
    assert loop.delay() == 5.0


async def test_a_full_batch_runs_the_next_round_at_once() -> None:
    body = Script([True, True, False, None])
    pauses = Pauses()
    await run_until_done(Loop("mirror", body, interval_s=0.25), body, pauses)
    assert body.calls == 4
    assert pauses.seen == [0.25, 0.25]  # after the False and the None only


async def test_wait_first_pauses_before_the_first_round() -> None:
    body = Script([None])
    pauses = Pauses()
    await run_until_done(Loop("moves", body, interval_s=1.0, wait_first=True), body, pauses)
    assert pauses.seen[0] == 1.0


async def test_failures_are_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    body = Script([OSError("store down"), KeyError("bug"), None])
    counted: list[str] = []
    loop = Loop("reconciler", body, interval_s=1.0, expected=(OSError,))
    with caplog.at_level(logging.WARNING, logger="bookcluster.loops"):
        await run_until_done(loop, body, Pauses(), lambda lp: counted.append(lp.name))
    assert counted == ["reconciler", "reconciler"]
    expected, unexpected = [r for r in caplog.records if r.name == "bookcluster.loops"][:2]
    assert "store down" in expected.getMessage() and expected.exc_info is None
    assert unexpected.exc_info is not None and unexpected.exc_info[0] is KeyError


async def test_cancellation_ends_the_loop_in_its_body_and_in_its_pause() -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow() -> None:
        started.set()
        await release.wait()

    loop = Loop("watch", slow, interval_s=1.0)
    task = asyncio.create_task(loop.run(Pauses()))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert loop.failures == 0 and loop.successes == 0  # cancelled: neither

    calls = 0

    async def quick() -> None:
        nonlocal calls
        calls += 1

    pausing = asyncio.Event()

    async def long_pause(_: float) -> None:
        pausing.set()
        await asyncio.Event().wait()  # never ends by itself

    loop = Loop("watch", quick, interval_s=1.0)
    task = asyncio.create_task(loop.run(long_pause))
    await asyncio.wait_for(pausing.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1


async def test_the_last_success_is_recorded_and_staleness_follows_it() -> None:
    body = Script([None, RuntimeError("down")])
    loop = Loop("mirror", body, interval_s=0.25)
    await run_until_done(loop, body, Pauses())
    assert loop.last_success is not None and loop.started is not None
    assert loop.last_error == "RuntimeError: down"
    bound = loop.stale_bound_s()
    assert bound == STALE_FLOOR_S  # 5 intervals of 0.25 s is less than the floor
    assert not loop.stale(loop.last_success + bound)
    assert loop.stale(loop.last_success + bound + 0.1)
    assert Loop("sweeper", body, interval_s=30.0).stale_bound_s() == 150.0


def test_a_loop_that_never_succeeded_is_stale_from_its_start() -> None:
    loop = Loop("relay", Script([]), interval_s=0.1)
    assert not loop.stale(1000.0)  # not started: nothing to say
    loop.started = 1000.0
    assert not loop.stale(1000.0 + STALE_FLOOR_S)
    assert loop.stale(1000.0 + STALE_FLOOR_S + 1)


async def test_loops_count_in_the_owners_registry_report_and_close() -> None:
    registry = CollectorRegistry()
    pauses = Pauses()
    loops = Loops("west", registry, sleep=pauses)
    failing = Script([OSError("down")] * 3)
    fine = Script([None])

    async def always_down() -> None:
        if failing.steps:
            await failing()
        failing.done.set()
        failing.calls += 1
        raise OSError("down")

    loops.start(Loop("relay", always_down, interval_s=0.1))
    loops.start(Loop("mirror", fine, interval_s=0.25))
    with pytest.raises(ValueError, match="runs already"):
        loops.start(Loop("mirror", fine, interval_s=0.25))
    await asyncio.wait_for(failing.done.wait(), 5)
    await asyncio.wait_for(fine.done.wait(), 5)
    await loops.close()
    await loops.close()  # idempotent
    calls = failing.calls + fine.calls
    await asyncio.sleep(0)
    assert failing.calls + fine.calls == calls  # nothing runs after close

    assert registry.get_sample_value(
        "bookcluster_loop_failures_total", {"region": "west", "loop": "relay"}) == failing.calls
    assert registry.get_sample_value(
        "bookcluster_loop_failures_total", {"region": "west", "loop": "mirror"}) == 0
    assert registry.get_sample_value(
        "bookcluster_loop_last_success_seconds", {"region": "west", "loop": "relay"}) == 0
    assert (registry.get_sample_value(
        "bookcluster_loop_last_success_seconds", {"region": "west", "loop": "mirror"}) or 0) > 0

    relay = loops.loops["relay"]
    assert relay.started is not None
    later = relay.started + STALE_FLOOR_S + 1
    report = loops.report(later)
    assert report["relay"]["stale"] and report["relay"]["last_success"] is None
    assert report["relay"]["failures"] == failing.calls >= 3
    assert report["relay"]["last_error"] == "OSError: down"
    assert report["mirror"]["failures"] == 0 and report["mirror"]["last_success"] is not None
    assert "relay" in loops.stale(later)
    mirror = loops.loops["mirror"]
    assert mirror.last_success is not None
    assert loops.stale(mirror.last_success + 1) == []
