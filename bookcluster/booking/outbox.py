"""The outbox: jobs written in the same transaction as the change that causes them.

The outbox is the region's job queue too: the region's workers claim its rows and
run them (`bookcluster/stores/jobqueue.py`, `bookcluster/worker/queue.py`); a job
runs only if the transaction that wrote it commits, and at least once after that.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg


async def enqueue(conn: asyncpg.Connection, kind: str, payload: dict[str, Any]) -> None:
    """Write a job; it runs only if the surrounding transaction commits."""
    await conn.execute("INSERT INTO outbox (kind, payload) VALUES ($1, $2::jsonb)",
                       kind, json.dumps(payload))
