"""The outbox: jobs written in the same transaction as the change that causes them,
and the relay that moves them to the region's queue.

A job is relayed at least once: if the relay dies between enqueue and
marking the row, the row is enqueued again under the same job id
(`outbox-<id>`), which the queue de-duplicates; handlers are idempotent anyway.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg
from bullmq import Queue

from bookcluster.loops import Loop
from bookcluster.seats.home import HomeRegion
from bookcluster.stores.jobqueue import add_jobs
from bookcluster.topology.errors import RegionUnavailable

log = logging.getLogger(__name__)

BATCH = 200
IDLE_POLL_S = 0.1
FAILURE_PAUSE_S = 1.0  # the first pause after a failed round (then backed off)


async def enqueue(conn: asyncpg.Connection, kind: str, payload: dict[str, Any]) -> None:
    """Write a job; it runs only if the surrounding transaction commits."""
    await conn.execute("INSERT INTO outbox (kind, payload) VALUES ($1, $2::jsonb)",
                       kind, json.dumps(payload))


class Relay:
    def __init__(self, home: HomeRegion, region: str, queue: Queue) -> None:
        self.home = home
        self.region = region
        self.queue = queue
        self.relayed_total = 0

    async def relay_once(self) -> int:
        """Move one batch of pending outbox rows to the queue. Returns how many."""
        # An idle relay polls ten times a second: one statement to look, rather than
        # BEGIN, SELECT ... FOR UPDATE, COMMIT (a third of an idle worker's CPU).
        async with self.home.connection(self.region) as conn:
            if not await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM outbox WHERE relayed_at IS NULL)"):
                return 0
        async with self.home.transaction(self.region) as conn:
            rows = await conn.fetch(
                "SELECT id, kind, payload FROM outbox WHERE relayed_at IS NULL "
                "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED", BATCH)
            # One round trip for the batch, not one per row: the relay keeps up
            # with hundreds of confirms a second while the worker is busy.
            await add_jobs(self.queue, [
                (row["kind"], {**json.loads(row["payload"]), "outbox_id": row["id"]},
                 f"outbox-{row['id']}") for row in rows])
            if rows:
                await conn.execute("UPDATE outbox SET relayed_at = now() WHERE id = ANY($1)",
                                   [r["id"] for r in rows])
        self.relayed_total += len(rows)
        return len(rows)

    async def pending(self) -> int:
        async with self.home.connection(self.region) as conn:
            return int(await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE relayed_at IS NULL"))

    async def _round(self) -> bool:
        return await self.relay_once() == BATCH  # a full batch: the next one at once

    def loop(self) -> Loop:
        """Polls every IDLE_POLL_S; the stores not answering pause it (backed off)."""
        return Loop("relay", self._round, IDLE_POLL_S, backoff_s=FAILURE_PAUSE_S,
                    expected=(RegionUnavailable, OSError))
