"""What the region's worker sees of its region's stores, for alerts: is each leader
writable now, and how far behind it is each copy of it.

Once a second (the worker's `stores` loop): the Redis master (through Sentinel, as every
write finds it) answers `INFO replication` as a master, and the PostgreSQL primary
answers a read of `pg_stat_replication`. Either missing its answer within the bound
is "no writable leader now": a failover in progress, or the store is down; the alert
rules tell the two apart by how long it lasts (`deploy/prometheus/`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bookcluster.metrics import WorkerMetrics
from bookcluster.stores.connections import Connections

ANSWER_S = 1.0  # a leader slower than this to answer counts as none

STANDBY_LAG = """
SELECT application_name,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS lag
FROM pg_stat_replication WHERE replay_lsn IS NOT NULL"""


def replica_lags(info: dict[str, Any]) -> dict[str, int] | None:
    """Each replica's unacknowledged bytes from a master's parsed `INFO replication`
    (`slaveN: {ip, port, offset, ...}`); None if the server is not a master."""
    if info.get("role") != "master":
        return None
    head = int(info.get("master_repl_offset", 0))
    return {f"{value['ip']}:{value['port']}": max(0, head - int(value.get("offset", 0)))
            for key, value in info.items()
            if key.startswith("slave") and isinstance(value, dict) and "ip" in value}


class StoreWatch:
    def __init__(self, connections: Connections, region: str, metrics: WorkerMetrics) -> None:
        self.connections = connections
        self.region = region
        self.metrics = metrics

    async def run_once(self) -> None:
        await asyncio.gather(self._redis(), self._postgres())

    async def _redis(self) -> None:
        try:
            async with asyncio.timeout(ANSWER_S):
                info = await self.connections.redis_master(self.region).info("replication")
        except Exception:  # any failure: no leader answered
            lags = None
        else:
            lags = replica_lags(info)
        self.metrics.store_reachable.labels(self.region, "redis").set(lags is not None)
        for replica, lag in (lags or {}).items():
            self.metrics.redis_replica_lag.labels(self.region, replica).set(lag)

    async def _postgres(self) -> None:
        pool = self.connections.pg_primary(self.region)
        try:
            async with asyncio.timeout(ANSWER_S), pool.acquire() as conn:
                rows = await conn.fetch(STANDBY_LAG)
        except Exception:  # any failure: no leader answered
            self.metrics.store_reachable.labels(self.region, "postgres").set(0)
            return
        self.metrics.store_reachable.labels(self.region, "postgres").set(1)
        for row in rows:
            self.metrics.pg_standby_lag.labels(self.region, row["application_name"]).set(
                row["lag"])
