"""The region-local job queue: BullMQ on the region's own Redis master.

Why BullMQ (the Python port of the library seed 004 names) rather than our
own plumbing or arq: it gives at-least-once delivery with job locks that a
crashed worker stops renewing (its jobs go back to `wait` via the stalled
check and another worker runs them), retries with exponential backoff, a
`failed` set that is our dead-letter list (inspect and `retry` from the
CLI), job-id de-duplication (the outbox relay may enqueue a job twice after
a crash), and counts for metrics. arq pins redis-py < 6 and has no
dead-letter list. Queues are never synchronised across regions.

The queue lives on whichever server is the region's master now: BullMQ gets a
client that asks Sentinel (`bookcluster.stores.connections.make_master`), so after a failover
its next connection goes to the new master (jobs a promotion lost are
re-enqueued: the relay marks outbox rows only after the queue took them, and
every handler is idempotent).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import redis.asyncio as aioredis
from bullmq import Queue

from bookcluster.stores.connections import make_master
from bookcluster.topology.model import Topology

QUEUE_PREFIX = "bookcluster"
JOB_ATTEMPTS = 6
# Retries back off 0.5 s, 1 s, 2 s, 4 s, 8 s; then the job stays in `failed`.
JOB_OPTIONS: dict[str, Any] = {
    "attempts": JOB_ATTEMPTS,
    "backoff": {"type": "exponential", "delay": 500},
    # Completed jobs are kept a day so a re-enqueue with the same id is a no-op.
    "removeOnComplete": {"age": 86_400, "count": 100_000},
    "removeOnFail": False,
}
# A job whose worker stops renewing its lock (killed, frozen) is taken back
# after about lockDuration + stalledInterval.
WORKER_OPTIONS: dict[str, Any] = {
    "concurrency": 8,
    "lockDuration": 4_000,
    "stalledInterval": 2_000,
    "maxStalledCount": 3,
    # An idle worker re-polls every second (default 5 s): a job whose wake-up
    # marker was missed still starts within a second.
    "drainDelay": 1,
    "prefix": QUEUE_PREFIX,
}
COUNT_STATES = ("waiting", "active", "delayed", "failed", "completed", "prioritized")
# A BullMQ worker waits for its next job with a blocking command of up to 10 s on the
# same client (its `maximumBlockTimeout`): a command may take that long and more.
COMMAND_TIMEOUT_S = 15.0


def queue_name(region: str) -> str:
    return f"jobs-{region}"


def connection(topology: Topology, region: str) -> aioredis.Redis:
    """A client of the region's master wherever it is now; closing the queue or worker
    that uses it closes it."""
    return make_master(topology, region, near=region, timeout_s=COMMAND_TIMEOUT_S)


def open_queue(topology: Topology, region: str) -> Queue:
    return Queue(queue_name(region), {"connection": connection(topology, region),
                                      "prefix": QUEUE_PREFIX})


class Queues:
    """One queue (one Redis client) per region, made on first use and closed together by
    their owner (a node's app context), so a request never opens a client of its own."""

    def __init__(self, topology: Topology) -> None:
        self._topology = topology
        self._queues: dict[str, Queue] = {}
        self._closed = False

    def get(self, region: str) -> Queue:
        if self._closed:
            raise RuntimeError("the job queues are closed")
        queue = self._queues.get(region)
        if queue is None:
            queue = self._queues[region] = open_queue(self._topology, region)
        return queue

    async def close(self) -> None:
        self._closed = True
        queues, self._queues = list(self._queues.values()), {}
        for queue in queues:
            await queue.close()

    async def __aenter__(self) -> Queues:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


async def add_jobs(queue: Queue, jobs: list[tuple[str, dict[str, Any], str]]) -> None:
    """Several (kind, data, job id) in one round trip (a MULTI of the same script)."""
    if jobs:
        await queue.addBulk([{"name": kind, "data": data,
                              "opts": {**JOB_OPTIONS, "jobId": job_id}}
                             for kind, data, job_id in jobs])


async def counts(queue: Queue) -> dict[str, int]:
    return {k: int(v) for k, v in (await queue.getJobCounts(*COUNT_STATES)).items()}


async def dead_letters(queue: Queue, limit: int = 100) -> list[dict[str, Any]]:
    jobs = await queue.getFailed(0, limit - 1)
    return [{"id": j.id, "kind": j.name, "data": j.data, "attempts": j.attemptsMade,
             "reason": j.failedReason} for j in jobs]


async def replay(queue: Queue, job_ids: list[str] | None = None) -> int:
    """Move dead-lettered jobs back to the queue. Returns how many."""
    jobs = await queue.getFailed(0, -1)
    chosen = [j for j in jobs if job_ids is None or j.id in job_ids]
    for job in chosen:
        await job.retry("failed")
    return len(chosen)
