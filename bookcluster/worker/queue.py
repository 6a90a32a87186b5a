"""The worker's job consumer: claims the region's due outbox rows and runs them.

Up to `concurrency` jobs run at once, each as an owned task. One loop claims: a
round marks the jobs that finished since the last one done and claims as many due
rows as make up two batches of `concurrency` held (running, or claimed to start when
a slot frees), in one statement (`bookcluster.stores.jobqueue.claim`). The next
round comes when a batch has started (under load one statement claims and marks
done about `concurrency` jobs), or after `poll_s`: an idle worker asks ten times a
second with one index probe (`any_due`), as the relay did. Another loop renews the
leases of the jobs held; a job whose lease turns out to be another worker's (this
process was frozen past it) is cancelled here, since that worker runs it now. On
close: no new claims, running jobs get a grace period, then the rest are cancelled
and handed back at once (their next attempt), with the ones never started.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bookcluster.loops import Loop
from bookcluster.seats.home import HomeRegion
from bookcluster.stores import jobqueue
from bookcluster.stores.jobqueue import Job
from bookcluster.topology.errors import RegionUnavailable

log = logging.getLogger(__name__)

CONCURRENCY = 8
# Jobs held at most, in batches of CONCURRENCY: a claim costs PostgreSQL about 0.45 ms
# whatever its size plus 0.03 ms per job (measured: 0.13 ms a job claimed 4 at a time,
# 0.06 ms 8 at a time), so a worker keeps the next batch claimed while one runs.
PREFETCH = 2
IDLE_POLL_S = 0.1
RENEW_EVERY_S = jobqueue.LEASE_S / 4
FAILURE_PAUSE_S = 1.0  # the first pause after a failed round (then backed off)

Run = Callable[[Job], Awaitable[Any]]


def worker_name(region: str) -> str:
    """Unique per process and start: a lease names its holder."""
    return f"{region}/{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class Consumer:
    def __init__(self, home: HomeRegion, region: str, run: Run, *,
                 concurrency: int = CONCURRENCY, poll_s: float = IDLE_POLL_S,
                 lease_s: float = jobqueue.LEASE_S) -> None:
        self.home = home
        self.region = region
        self.run = run
        self.name = worker_name(region)
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.running: dict[int, asyncio.Task[None]] = {}
        self.waiting: dict[int, Job] = {}  # claimed, to start when a slot frees (in order)
        self._done: list[int] = []  # finished, marked done with the next claim
        self._wake = asyncio.Event()
        self._closing = False
        self._idle = True  # the last claim found nothing
        self.claimed_total = 0

    def _held(self) -> int:
        return len(self.running) + len(self.waiting)

    async def claim_once(self) -> int:
        """Mark the finished jobs done and claim a batch of due ones (up to PREFETCH
        jobs held), starting as many as there are free slots. Returns how many it
        claimed."""
        want = 0 if self._closing else PREFETCH * self.concurrency - self._held()
        if want <= 0 and not self._done:
            return 0
        done, self._done = self._done, []
        try:
            async with self.home.connection(self.region) as conn:
                if not done and self._idle and not await jobqueue.any_due(conn):
                    return 0  # the idle poll: one index probe, not a claim
                jobs = await jobqueue.claim(conn, self.name, done, max(want, 0), self.lease_s)
        except BaseException:
            self._done[:0] = done  # marked next time (a lost mark re-runs them)
            raise
        self._idle = not jobs
        for job in jobs:
            self.waiting[job.id] = job
        self._start()
        self.claimed_total += len(jobs)
        return len(jobs)

    def _start(self) -> None:
        while self.waiting and len(self.running) < self.concurrency and not self._closing:
            row_id = next(iter(self.waiting))
            job = self.waiting.pop(row_id)
            self.running[row_id] = asyncio.create_task(self._run(job), name=f"job {job.name}")

    async def _round(self) -> bool:
        """One claim; then wait until the jobs held fall to one batch (a claim per batch
        under load, not per job), or `poll_s` passed."""
        self._wake.clear()
        await self.claim_once()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.poll_s
        while (left := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(left):  # not wait_for: it can swallow a cancel
                    await self._wake.wait()
            except TimeoutError:
                break
            self._wake.clear()
            if self._held() <= (PREFETCH - 1) * self.concurrency:
                break
        return True

    async def _run(self, job: Job) -> None:
        try:
            await self.run(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the job's failure, recorded for its retry
            await self._failed(job, exc)
        else:
            self._done.append(job.id)
        finally:
            self.running.pop(job.id, None)
            self._start()
            self._wake.set()

    async def _failed(self, job: Job, exc: Exception) -> None:
        try:
            async with self.home.connection(self.region) as conn:
                await jobqueue.failed(conn, self.name, job.id, f"{type(exc).__name__}: {exc}")
        except Exception as failure:  # noqa: BLE001 - the stores: logged, never raised here
            # Not recorded: the lease ends and the job runs again (an attempt uncounted).
            log.warning("failure of job %s not recorded: %s", job.name, failure)

    async def renew_once(self) -> None:
        """Extend the leases of the jobs held; drop or cancel those another worker took."""
        ids = [*self.running, *self.waiting]
        if not ids:
            return
        async with self.home.connection(self.region) as conn:
            ours = await jobqueue.renew(conn, self.name, ids, self.lease_s)
        for row_id in ids:
            if row_id in ours:
                continue
            self.waiting.pop(row_id, None)
            task = self.running.get(row_id)
            if task is not None:
                log.warning("job %s: lease lost (another worker runs it); stopped here",
                            jobqueue.job_id(row_id))
                task.cancel()

    def loops(self) -> list[Loop]:
        expected = (RegionUnavailable, OSError)
        return [Loop("jobs", self._round, 0.0, backoff_s=FAILURE_PAUSE_S, expected=expected,
                     stale_after_s=10.0),
                Loop("leases", self.renew_once, RENEW_EVERY_S, backoff_s=0.25,
                     backoff_cap_s=RENEW_EVERY_S, expected=expected, wait_first=True)]

    async def close(self, grace_s: float) -> None:
        """Let running jobs end within `grace_s` (the caller keeps the lease loop going
        meanwhile), then cancel the rest and hand them back; delete the finished ones."""
        self._closing = True
        left: list[int] = list(self.waiting)  # never started: back to the queue at once
        self.waiting.clear()
        if self.running:
            _, pending = await asyncio.wait(list(self.running.values()), timeout=grace_s)
            left += [row_id for row_id, task in self.running.items() if task in pending]
            if pending:
                log.warning("%d job(s) still running after %.0fs; handed back to the queue",
                            len(pending), grace_s)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        try:
            async with self.home.connection(self.region) as conn:
                if left:
                    await jobqueue.renew(conn, self.name, left, 0.0)
                if self._done:
                    await jobqueue.claim(conn, self.name, self._done, 0, self.lease_s)
                    self._done = []
        except (RegionUnavailable, OSError) as exc:
            log.warning("closing the job consumer of %s: %s (leases end by themselves)",
                        self.region, exc)
