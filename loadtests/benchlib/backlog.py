"""The work a phase leaves to the region workers, and what doing it costs.

A confirm writes outbox jobs (ticket, notification) and mirror rows in its
transaction; the region's worker runs them later (the outbox is its queue). A phase's CPU per
operation must include that work, or a bench with workers hides most of a
confirm's cost. So after a phase the bench waits until every region's backlog
is empty (jobs waiting + jobs running or backed off + mirror changes not marked
applied), bounded by `timeout_s`, and adds the CPU every group spent in that
tail, net of what the group spends idle (measured once per cluster).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from bookcluster.stores import jobqueue
from bookcluster.stores.connections import PG_TOOL_SESSION, pg_dsn, pg_login

from .cpu import Snapshot, snapshot
from .local import BenchCluster

QUEUED = ("active", "delayed")  # taken by a worker, or waiting out a backoff
POLL_S = 0.2


class Backlog:
    """Reads the backlog of `regions` (default: every region); an async context manager
    (one connection each)."""

    def __init__(self, cluster: BenchCluster, regions: list[str] | None = None) -> None:
        self.cluster = cluster
        self.regions = regions if regions is not None else list(cluster.topology.regions)
        self.pools: dict[str, asyncpg.Pool] = {}

    async def __aenter__(self) -> Backlog:
        topology = self.cluster.topology
        try:
            for region in self.regions:
                self.pools[region] = await asyncpg.create_pool(
                    pg_dsn(topology.region(region).pg_primary), **pg_login(topology.secrets),
                    server_settings=PG_TOOL_SESSION, min_size=1, max_size=1)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        for pool in self.pools.values():
            await pool.close()

    async def read(self) -> dict[str, int]:
        outbox = mirror = queued = 0
        for pool in self.pools.values():
            mirror += int(await pool.fetchval(
                "SELECT count(*) FROM mirror_change WHERE applied_at IS NULL"))
            counts = await jobqueue.counts(pool)
            outbox += counts["waiting"]  # not taken yet
            queued += sum(counts[state] for state in QUEUED)
        return {"outbox": outbox, "mirror": mirror, "queued": queued,
                "total": outbox + mirror + queued}


class Settle:
    """Waits out a phase's backlog and prices it; `idle_rates` first, once per cluster."""

    def __init__(self, backlog: Backlog, groups: dict[str, list[int]],
                 timeout_s: float) -> None:
        self.backlog = backlog
        self.groups = groups
        self.timeout_s = timeout_s
        self.idle: dict[str, float] = {}  # group -> CPU s per s while nothing happens

    async def idle_rates(self, seconds: float) -> dict[str, float]:
        await self.wait_empty()
        before = snapshot(self.groups)
        await asyncio.sleep(seconds)
        after = snapshot(self.groups)
        elapsed = after.at - before.at
        self.idle = {g: max(0.0, after.groups[g] - before.groups.get(g, 0.0)) / elapsed
                     for g in after.groups}
        return {g: round(v * 1000, 2) for g, v in self.idle.items()}  # ms per s

    async def wait_empty(self) -> tuple[dict[str, int], bool]:
        """(the backlog first seen, whether it emptied within `timeout_s`)."""
        first = left = await self.backlog.read()
        deadline = time.perf_counter() + self.timeout_s
        while left["total"] > 0 and time.perf_counter() < deadline:
            await asyncio.sleep(POLL_S)
            left = await self.backlog.read()
        return first, left["total"] == 0

    async def after(self, end: Snapshot) -> dict[str, Any]:
        """From `end` (the last load generator answered) until the backlog is empty: how
        long, what was left, and each group's CPU seconds net of its idle use."""
        at_end, emptied = await self.wait_empty()
        final = snapshot(self.groups)
        tail_s = final.at - end.at
        return {"backlog_at_end": at_end, "emptied": emptied, "tail_s": round(tail_s, 3),
                "cpu_s": {g: round(max(0.0, final.groups[g] - end.groups.get(g, 0.0)
                                       - self.idle.get(g, 0.0) * tail_s), 3)
                          for g in final.groups}}
