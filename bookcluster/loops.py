"""Supervised periodic loops: every background loop of a process runs through here.

A `Loop` is a body (one iteration, the loop's run-once mode) and an interval. The
body's failure is logged (one line for the failures a loop expects, such as its
stores not answering; a traceback for any other), counted, and backed off: the
pause doubles from `backoff_s` up to `backoff_cap_s` and is back to the interval
after the next success. Then the loop goes on. Cancellation ends it at once.
Each loop records when it last succeeded: the worker's `/readyz` reports it.

`Loops` is a process's set of them: it starts them as owned tasks, counts their
failures in the owner's Prometheus registry and cancels and awaits them on close.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger(__name__)

# A failing loop is tried again at most this far apart (unless its interval is longer):
# a store that answers again is noticed within seconds, a dead one is not hammered.
BACKOFF_CAP_S = 2.0
# A loop is stale when it has not succeeded for this many intervals, and at least
# STALE_FLOOR_S (a body may take a while; one failure or a slow round is not stale).
STALE_INTERVALS = 5
STALE_FLOOR_S = 10.0

# One iteration. True: there is more to do at once (a full batch), so no pause.
Body = Callable[[], Awaitable[bool | None]]
Sleep = Callable[[float], Awaitable[Any]]


@dataclass
class Loop:
    """One periodic loop and what it did last."""

    name: str
    body: Body
    interval_s: float
    backoff_s: float | None = None  # first pause after a failure (None: the interval)
    backoff_cap_s: float = BACKOFF_CAP_S
    expected: tuple[type[BaseException], ...] = ()  # failures logged without a traceback
    wait_first: bool = False  # pause before the first round (its first run happened elsewhere)
    stale_after_s: float | None = None  # None: STALE_INTERVALS intervals, STALE_FLOOR_S at least
    failed_in_row: int = field(default=0, init=False)
    failures: int = field(default=0, init=False)
    successes: int = field(default=0, init=False)
    last_success: float | None = field(default=None, init=False)  # wall clock
    last_error: str | None = field(default=None, init=False)
    started: float | None = field(default=None, init=False)  # wall clock

    def delay(self) -> float:
        """The pause before the next round, after the rounds so far."""
        if not self.failed_in_row:
            return self.interval_s
        first = self.interval_s if self.backoff_s is None else self.backoff_s
        cap = max(self.backoff_cap_s, first)
        return float(min(cap, first * 2 ** min(self.failed_in_row - 1, 32)))

    def stale_bound_s(self) -> float:
        if self.stale_after_s is not None:
            return self.stale_after_s
        return max(STALE_INTERVALS * max(self.interval_s, self.backoff_s or 0.0),
                   STALE_FLOOR_S)

    def stale(self, now: float) -> bool:
        """Not succeeded within its bound (counted from its start until the first success)."""
        since = self.last_success if self.last_success is not None else self.started
        return since is not None and now - since > self.stale_bound_s()

    async def run_once(self, on_failure: Callable[[Loop], None] = lambda _: None) -> bool:
        """Run the body once, supervised. Returns whether there is more to do at once."""
        try:
            more = await self.body()
        except asyncio.CancelledError:
            raise
        except self.expected as exc:
            self._failed(exc, on_failure)
            log.warning("%s loop failed (%d in a row), next try in %.2fs: %s",
                        self.name, self.failed_in_row, self.delay(), exc)
            return False
        except Exception as exc:
            self._failed(exc, on_failure)
            log.exception("%s loop failed (%d in a row), next try in %.2fs",
                          self.name, self.failed_in_row, self.delay())
            return False
        if self.failed_in_row:
            log.info("%s loop succeeded again after %d failure(s)", self.name,
                     self.failed_in_row)
        self.failed_in_row = 0
        self.successes += 1
        self.last_success = time.time()
        self.last_error = None
        return bool(more)

    def _failed(self, exc: BaseException, on_failure: Callable[[Loop], None]) -> None:
        self.failed_in_row += 1
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        on_failure(self)

    async def run(self, sleep: Sleep = asyncio.sleep,
                  on_failure: Callable[[Loop], None] = lambda _: None) -> None:
        """Forever: round, pause, round. Ends only by cancellation."""
        self.started = time.time()
        if self.wait_first:
            await sleep(self.interval_s)
        while True:
            if not await self.run_once(on_failure):
                await sleep(self.delay())


async def cancel_and_wait(tasks: list[asyncio.Task[Any]], *,
                          again_after_s: float = 0.5) -> None:
    """Cancel `tasks` and wait until every one has ended, cancelling again any that
    goes on: on Python 3.11 `asyncio.wait_for` swallows a cancellation that arrives
    as the awaited thing completes, so one cancel() may not end a loop (a close that
    hung until the test's timeout, once in a few hundred runs)."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=again_after_s)
        if pending:
            log.warning("cancelled again (the first cancel was swallowed): %s",
                        ", ".join(task.get_name() for task in pending))
    await asyncio.gather(*tasks, return_exceptions=True)  # retrieve their exceptions


class Loops:
    """A process's supervised loops: started as owned tasks, cancelled and awaited on
    close; their failures and last successes in the owner's registry."""

    def __init__(self, region: str, registry: CollectorRegistry | None = None,
                 sleep: Sleep = asyncio.sleep) -> None:
        self.region = region
        self._sleep = sleep
        self.loops: dict[str, Loop] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.failures = Counter(
            "bookcluster_loop_failures", "Failed rounds of a background loop (each logged "
            "and backed off; the loop goes on)", ["region", "loop"], registry=registry)
        self.last_success = Gauge(
            "bookcluster_loop_last_success_seconds", "Unix time of a background loop's "
            "last successful round (0: none yet)", ["region", "loop"], registry=registry)

    def start(self, loop: Loop) -> Loop:
        if loop.name in self.loops:
            raise ValueError(f"a loop named {loop.name!r} runs already")
        self.loops[loop.name] = loop
        self.failures.labels(self.region, loop.name)  # exported at 0 from the start
        self.last_success.labels(self.region, loop.name).set_function(
            lambda: loop.last_success or 0.0)
        self._tasks.append(asyncio.create_task(
            loop.run(self._sleep, self._count), name=loop.name))
        return loop

    def _count(self, loop: Loop) -> None:
        self.failures.labels(self.region, loop.name).inc()

    def stale(self, now: float | None = None) -> list[str]:
        """The loops that have not succeeded within their bound."""
        now = time.time() if now is None else now
        return [name for name, loop in self.loops.items() if loop.stale(now)]

    def report(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Each loop's last success (unix time and age), failures and staleness."""
        now = time.time() if now is None else now
        return {name: {
            "last_success": loop.last_success,
            "age_s": None if loop.last_success is None else round(now - loop.last_success, 3),
            "stale_after_s": loop.stale_bound_s(),
            "stale": loop.stale(now),
            "failures": loop.failures,
            "failing_for": loop.failed_in_row,
            "last_error": loop.last_error,
        } for name, loop in self.loops.items()}

    async def close(self) -> None:
        """Cancel every loop and wait for it to end (idempotent)."""
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)

    async def __aenter__(self) -> Loops:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
