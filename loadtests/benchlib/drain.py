"""Do the workers keep up? The backlog and the jobs they finished, sampled over time.

While a phase runs and until its backlog is empty, every `EVERY_S` the bench reads
the backlog through `Backlog.read()` (jobs not taken yet, jobs taken or backing off,
mirror changes not applied: whatever the job queue is made of, `backlog.py` knows)
and each region worker's `bookcluster_jobs_total` (jobs run, any outcome, from its
`/metrics`). Over the load window that gives the jobs made per second (finished +
the growth of the jobs backlog), the jobs finished per second, and from the two the
workers' drain rate in the phase's own unit (confirms, bookings): what they finish
per second divided by the jobs one operation makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from .backlog import Backlog
from .local import BenchCluster

EVERY_S = 0.5
JOBS_RUN = "bookcluster_jobs_total"


class DrainSampler:
    """An async context manager: samples from entry until `stop()` (or exit)."""

    def __init__(self, cluster: BenchCluster, http: aiohttp.ClientSession,
                 backlog: Backlog, every_s: float = EVERY_S) -> None:
        self.workers = [f"http://{w.host}:{w.port}/metrics"
                        for r in cluster.topology.regions
                        if (w := cluster.topology.region(r).worker) is not None]
        self.http = http
        self.backlog = backlog
        self.every_s = every_s
        self.samples: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def jobs_run(self) -> int:
        done = 0.0
        for url in self.workers:
            async with self.http.get(url) as resp:
                text = await resp.text()
            for family in text_string_to_metric_families(text):
                done += sum(s.value for s in family.samples if s.name == JOBS_RUN)
        return int(done)

    async def sample(self) -> dict[str, Any]:
        at = time.perf_counter()
        backlog = await self.backlog.read()
        return {"at": at, "jobs_waiting": backlog["outbox"] + backlog["queued"],
                "mirror": backlog["mirror"], "total": backlog["total"],
                "jobs_run": await self.jobs_run()}

    async def _loop(self) -> None:
        while True:
            self.samples.append(await self.sample())
            await asyncio.sleep(self.every_s)

    async def __aenter__(self) -> DrainSampler:
        self._task = asyncio.create_task(self._loop())
        return self

    async def stop(self) -> list[dict[str, Any]]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self.samples.append(await self.sample())
        return self.samples

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def drain_summary(samples: list[dict[str, Any]], window: tuple[float, float],
                  done: int, elapsed_s: float, unit: str) -> dict[str, Any]:
    """`done` operations (`unit`) answered in `elapsed_s` (the load generators' clock)
    within `window` (perf_counter start, end, around the load generators' run):
    jobs made and finished per second over the window, the jobs one operation makes,
    the answer rate and the workers' drain rate in operations per second, the backlog
    at its peak, and every sample as seconds since the window's start."""
    start, end = window
    if not samples:
        return {"samples": []}
    first = min(samples, key=lambda s: abs(s["at"] - start))
    last = min(samples, key=lambda s: abs(s["at"] - end))
    span = last["at"] - first["at"]
    finished = last["jobs_run"] - first["jobs_run"]
    made = finished + last["jobs_waiting"] - first["jobs_waiting"]
    per_op = made / done if done else None
    return {
        "unit": unit, "answered_per_s": round(done / elapsed_s, 1) if elapsed_s > 0 else None,
        "jobs_made_per_s": round(made / span, 1) if span > 0 else None,
        "jobs_finished_per_s": round(finished / span, 1) if span > 0 else None,
        "jobs_per_op": round(per_op, 3) if per_op is not None else None,
        # what the workers finish per second, in operations whose jobs that is
        "drained_per_s": round(finished / span / per_op, 1) if span > 0 and per_op else None,
        "backlog_peak": max(s["total"] for s in samples),
        "jobs_backlog_at_end": last["jobs_waiting"],
        "samples": [{"t_s": round(s["at"] - start, 2), "jobs_waiting": s["jobs_waiting"],
                     "mirror": s["mirror"], "total": s["total"], "jobs_run": s["jobs_run"]}
                    for s in samples]}
