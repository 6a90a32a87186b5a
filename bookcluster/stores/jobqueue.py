"""The region-local job queue: the outbox table in the region's PostgreSQL primary.

A job is an outbox row written in the transaction of the change that causes it
(`bookcluster/booking/outbox.py`); workers take it from there, with no relay
and no second store (`bookcluster/db/functions/jobs.sql` holds the statements):

- a worker claims due rows in batches with `FOR UPDATE SKIP LOCKED`; a claim is a
  lease (`run_at` moved to its end) that the worker renews while the job runs. A
  worker that dies or freezes stops renewing: once the lease ends the row is due
  again and another worker runs it (at least once; every handler is idempotent);
- a failed run is retried after a backoff doubling from 0.5 s, 6 attempts in all,
  then the row is dead-lettered (`failed_at`): kept, listed and replayed by
  `bookcluster jobs failed|replay` and the admin routes;
- a job that ran is marked done (batched with the worker's next claim) and deleted
  `DONE_KEEP_S` later by the workers' prune, so the table holds the queue, the
  dead letters and the last seconds' finished jobs (counted as `completed`).

Why not BullMQ on the region's Redis master any more (it was before): that
master is the seat master, replicated to a replica in every region, so every job
was written there and copied three times (~1.1 ms of Redis CPU per confirm), the
outbox was written and relayed besides, and BullMQ's machinery was 65 % of a
draining worker's samples. PostgreSQL holds the job already, in the same commit as
the sale; the bookkeeping of a job's progress commits without waiting for the
standby (losing one only runs an idempotent job again).

Job ids are `outbox-<row id>`, as the relay named them in BullMQ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

JOB_ATTEMPTS = 6
BACKOFF_MS = 500  # retries back off 0.5 s, 1 s, 2 s, 4 s, 8 s; then the job is dead
# A job whose worker stops renewing its lease (killed, frozen) is due again this
# long after its last renewal (BullMQ's lock was 4 s, checked every 2 s).
LEASE_S = 4.0
# Finished jobs are kept this long (counted, looked at; BullMQ kept them a day), then
# deleted: at 300 jobs/s the table holds about 9,000 finished rows.
DONE_KEEP_S = 30.0
# The states `counts` reports, as BullMQ named them (the metric's labels, the admin
# route's and `jobs counts`' keys). `completed`: done within DONE_KEEP_S;
# `prioritized` is always 0: jobs have no priorities.
COUNT_STATES = ("waiting", "active", "delayed", "failed", "completed", "prioritized")
JOB_ID_PREFIX = "outbox-"

_COUNTS = """
SELECT count(*) FILTER (WHERE live AND run_at <= now()) AS waiting,
       count(*) FILTER (WHERE live AND run_at > now() AND locked_by IS NOT NULL) AS active,
       count(*) FILTER (WHERE live AND run_at > now() AND locked_by IS NULL) AS delayed,
       count(*) FILTER (WHERE failed_at IS NOT NULL) AS failed,
       count(*) FILTER (WHERE done_at IS NOT NULL) AS completed
FROM (SELECT *, failed_at IS NULL AND done_at IS NULL AS live FROM outbox) o
"""


@dataclass(frozen=True)
class Job:
    """A claimed job: its row and the run this claim is (1 = the first)."""

    id: int
    kind: str
    data: dict[str, Any]
    attempt: int
    max_attempts: int
    created_at: datetime

    @property
    def name(self) -> str:
        return job_id(self.id)

    @property
    def last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts


def job_id(row_id: int) -> str:
    return f"{JOB_ID_PREFIX}{row_id}"


def row_ids(job_ids: list[str]) -> list[int]:
    """Row ids of job ids (`outbox-12`, or a bare `12`); ids of no row are left out."""
    out = []
    for name in job_ids:
        digits = name.removeprefix(JOB_ID_PREFIX)
        if digits.isascii() and digits.isdigit() and len(digits) < 19:
            out.append(int(digits))
    return out


def backoff_s(attempt: int, base_ms: int = BACKOFF_MS) -> float:
    """The pause after failed run number `attempt` (as `bc_job_failed` computes it)."""
    return float(base_ms * 2 ** min(max(attempt - 1, 0), 20)) / 1000


def _job(row: asyncpg.Record) -> Job:
    data = json.loads(row["payload"])
    return Job(row["id"], row["kind"], {**data, "outbox_id": row["id"]}, row["attempts"],
               row["max_attempts"], row["created_at"])


async def claim(conn: asyncpg.Connection, worker: str, done: list[int], limit: int,
                lease_s: float = LEASE_S) -> list[Job]:
    """Mark the jobs `done` that `worker` finished done, then claim up to `limit` due
    ones for `lease_s`: one statement."""
    rows = await conn.fetch("SELECT * FROM bc_jobs_claim($1, $2, $3, $4)", worker, done,
                            limit, timedelta(seconds=lease_s))
    return [_job(r) for r in rows]


async def any_due(conn: asyncpg.Connection) -> bool:
    """Whether a job is due: the idle poll, cheaper than a claim (0.05 ms of PostgreSQL
    CPU against 0.13)."""
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM outbox WHERE failed_at IS NULL AND done_at IS NULL "
        "AND run_at <= now())"))


async def renew(conn: asyncpg.Connection, worker: str, ids: list[int],
                lease_s: float = LEASE_S) -> set[int]:
    """Extend `worker`'s leases of `ids` (0: give them back now); the ids still its."""
    rows = await conn.fetch("SELECT bc_jobs_renew($1, $2, $3) AS id", worker, ids,
                            timedelta(seconds=lease_s))
    return {r["id"] for r in rows}


async def failed(conn: asyncpg.Connection, worker: str, row_id: int, error: str) -> bool | None:
    """Record a failed run: retried after its backoff, or dead (True). None: the job is
    not `worker`'s any more (its lease ended and another worker took it)."""
    dead: bool | None = await conn.fetchval("SELECT bc_job_failed($1, $2, $3)", worker,
                                            row_id, error)
    return dead


async def prune(conn: asyncpg.Connection, keep_s: float = DONE_KEEP_S) -> int:
    """Delete jobs done more than `keep_s` ago; returns how many."""
    return int(await conn.fetchval("SELECT bc_jobs_prune($1)", timedelta(seconds=keep_s)))


async def add(conn: asyncpg.Connection, kind: str, data: dict[str, Any], *,
              attempts: int = JOB_ATTEMPTS, backoff_ms: int = BACKOFF_MS) -> str:
    """Queue a job by itself (operators' probes, tests); returns its id. Jobs that a
    change causes are written with it (`bookcluster.booking.outbox.enqueue`)."""
    row_id = await conn.fetchval(
        "INSERT INTO outbox (kind, payload, max_attempts, backoff_ms) "
        "VALUES ($1, $2::jsonb, $3, $4) RETURNING id", kind, json.dumps(data), attempts,
        backoff_ms)
    return job_id(row_id)


async def counts(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, int]:
    found = dict(await conn.fetchrow(_COUNTS))
    return {state: int(found.get(state, 0)) for state in COUNT_STATES}


async def dead_letters(conn: asyncpg.Connection | asyncpg.Pool,
                       limit: int = 100) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, kind, payload, attempts, last_error FROM outbox "
        "WHERE failed_at IS NOT NULL ORDER BY failed_at, id LIMIT $1", limit)
    return [{"id": job_id(r["id"]), "kind": r["kind"],
             "data": {**json.loads(r["payload"]), "outbox_id": r["id"]},
             "attempts": r["attempts"], "reason": r["last_error"]} for r in rows]


async def replay(conn: asyncpg.Connection | asyncpg.Pool,
                 job_ids: list[str] | None = None) -> int:
    """Put dead-lettered jobs back in the queue (all, or those of `job_ids`), due now
    with their attempts anew. Returns how many."""
    ids = None if job_ids is None else row_ids(job_ids)
    if ids == []:
        return 0
    return int(await conn.fetchval("SELECT bc_jobs_replay($1)", ids))
