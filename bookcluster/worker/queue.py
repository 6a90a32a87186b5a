"""The worker's job consumer: claims the region's due outbox rows and runs them.

Up to `concurrency` jobs run at once, each as an owned task. One loop claims: a
round marks the jobs that finished since the last one done and claims as many due
rows as there are free slots, in one statement (`bookcluster.stores.jobqueue.claim`).
The next round comes when half the slots are free (under load one statement claims
a few jobs and marks a few done), or after `poll_s` (an idle worker asks ten times a
second, one cheap statement, as the relay did). Another loop renews the leases of
the running jobs; a job whose lease turns out to be another worker's (this process
was frozen past it) is cancelled here, since that worker runs it now. On close: no
new claims, running jobs get a grace period, then the rest are cancelled and handed
back at once (their next attempt).
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
        self._done: list[int] = []  # finished, marked done with the next claim
        self._wake = asyncio.Event()
        self._closing = False
        self.claimed_total = 0

    async def claim_once(self) -> int:
        """Mark the finished jobs done, claim due ones into the free slots and start
        them. Returns how many it claimed."""
        free = 0 if self._closing else self.concurrency - len(self.running)
        if free <= 0 and not self._done:
            return 0
        done, self._done = self._done, []
        try:
            async with self.home.connection(self.region) as conn:
                jobs = await jobqueue.claim(conn, self.name, done, max(free, 0), self.lease_s)
        except BaseException:
            self._done[:0] = done  # marked next time (a lost mark re-runs them)
            raise
        for job in jobs:
            self.running[job.id] = asyncio.create_task(self._run(job),
                                                       name=f"job {job.name}")
        self.claimed_total += len(jobs)
        return len(jobs)

    async def _round(self) -> bool:
        """One claim; then wait until half the slots are free (a claim per few jobs
        under load, not per job), or `poll_s` passed."""
        self._wake.clear()
        await self.claim_once()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.poll_s
        while (left := deadline - loop.time()) > 0:
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except TimeoutError:
                break
            self._wake.clear()
            if len(self.running) <= self.concurrency // 2:
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
            self._wake.set()

    async def _failed(self, job: Job, exc: Exception) -> None:
        try:
            async with self.home.connection(self.region) as conn:
                await jobqueue.failed(conn, self.name, job.id, f"{type(exc).__name__}: {exc}")
        except Exception as failure:  # noqa: BLE001 - the stores: logged, never raised here
            # Not recorded: the lease ends and the job runs again (an attempt uncounted).
            log.warning("failure of job %s not recorded: %s", job.name, failure)

    async def renew_once(self) -> None:
        """Extend the leases of the running jobs; cancel those another worker took."""
        ids = list(self.running)
        if not ids:
            return
        async with self.home.connection(self.region) as conn:
            ours = await jobqueue.renew(conn, self.name, ids, self.lease_s)
        for row_id in ids:
            task = self.running.get(row_id)
            if row_id not in ours and task is not None:
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
        left: list[int] = []
        if self.running:
            _, pending = await asyncio.wait(list(self.running.values()), timeout=grace_s)
            left = [row_id for row_id, task in self.running.items() if task in pending]
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
