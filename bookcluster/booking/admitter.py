"""The home region's admitter: moves each on-sale's frontier at the pace the region can
take, and publishes the queue's counters for every region to read.

One round (`Admitter.run_once`, the worker's supervised loop body) per on-sale stored in
this region's PostgreSQL: under the on-sale's row lock it seals the early joins' order
when the sale starts (`bc_onsale_seal`), measures its headroom (`bc_onsale_headroom`:
seats available and held, active shoppers), sets the rate (`queue_order.admit_rate`:
the topology's ceiling, scaled down by the round trip it measured to its Redis master
and PostgreSQL primary this round, smoothed), advances the frontier
(`queue_order.advance`) and records the step (`onsale_admit`). It keeps the admitted
users' waits (read again from PostgreSQL after a restart or a theatre move) and counts
those who abandoned (`queue_waits.py`). Then it copies the counters into the home
master (`onsale_state.publish`), which replicates everywhere.
PostgreSQL decides; a master that lost the copy gets all of it again next round.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bookcluster.booking import onsale_state, queue_order, queue_waits
from bookcluster.booking.onsale_state import Counters, OnSale
from bookcluster.booking.queue_waits import Waits
from bookcluster.errors import TransactionAborted
from bookcluster.loops import Loop
from bookcluster.seats.home import HomeRegion
from bookcluster.stores.connections import Connections
from bookcluster.stores.errors import REDIS_UNAVAILABLE
from bookcluster.topology.errors import RegionUnavailable

log = logging.getLogger(__name__)

INTERVAL_S = 0.5
WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
SMOOTHING = 0.3  # weight of this round's latency in the running estimate

# Every wait so far, for an admitter that starts with steps already recorded: an early
# joiner's from sale_at to the step that reached them (places, not users: the same
# multiset), a later joiner's from their join.
STORED_WAITS = """
SELECT extract(epoch FROM s.at - o.sale_at)::float8 AS waited,
       least(s.frontier, o.n_early) - least(s.before, o.n_early) AS n
FROM (SELECT frontier, at, coalesce(lag(frontier) OVER (ORDER BY frontier), 0) AS before
      FROM onsale_admit WHERE onsale_id = $1) s, onsale o
WHERE o.id = $1 AND o.n_early IS NOT NULL AND s.before < o.n_early
UNION ALL
SELECT extract(epoch FROM (SELECT a.at FROM onsale_admit a WHERE a.onsale_id = j.onsale_id
                           AND a.frontier > j.seq ORDER BY a.frontier LIMIT 1)
               - j.joined_at)::float8, 1
FROM onsale_join j JOIN onsale o ON o.id = j.onsale_id
WHERE j.onsale_id = $1 AND j.seq >= o.n_early AND j.seq < o.frontier"""
# Places admitted a whole shopping window ago or more, and the passes used (by seq).
EXPIRED_FRONTIER = """
SELECT coalesce(max(a.frontier), 0) FROM onsale_admit a JOIN onsale o ON o.id = a.onsale_id
WHERE a.onsale_id = $1 AND a.at <= now() - make_interval(secs => o.window_s)"""
USED_SEQS = """
SELECT j.seq FROM onsale_pass_use u
JOIN onsale_join j ON j.onsale_id = u.onsale_id AND j.user_id = u.user_id
WHERE u.onsale_id = $1"""


class AdmitterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["region", "onsale"]
        self.rate = Gauge("bookcluster_onsale_admit_rate", "Admissions a second the home "
                          "region allows now", labels, registry=registry)
        self.queue = Gauge("bookcluster_onsale_queue_length", "Users joined and not admitted",
                           labels, registry=registry)
        self.admitted = Counter("bookcluster_onsale_admitted", "Users admitted from the queue",
                                labels, registry=registry)
        self.active = Gauge("bookcluster_onsale_active_shoppers", "Admitted users within their "
                            "shopping window whose pass is not done", labels, registry=registry)
        self.wait = Gauge("bookcluster_onsale_wait_seconds", "Estimated wait of the last user "
                          "in the queue at the current rate", labels, registry=registry)
        self.waited = Histogram("bookcluster_onsale_waited_seconds", "How long admitted users "
                                "waited: from sale_at (early joiners) or their join (later)",
                                labels, buckets=WAIT_BUCKETS, registry=registry)
        self.sold_out = Gauge("bookcluster_onsale_sold_out", "1 when no seat is free and no "
                              "hold can lapse", labels, registry=registry)
        self.wait_p50 = Gauge("bookcluster_onsale_wait_p50_seconds", "Median wait of the users "
                              "admitted so far (from sale_at or their join; -1: none yet)",
                              labels, registry=registry)
        self.wait_p99 = Gauge("bookcluster_onsale_wait_p99_seconds", "99th percentile wait of "
                              "the users admitted so far (-1: none yet)", labels,
                              registry=registry)
        self.abandoned = Gauge("bookcluster_onsale_abandoned", "Admitted users whose shopping "
                               "window ended without a hold", labels, registry=registry)
        self.latency = Gauge("bookcluster_onsale_store_latency_seconds", "Round trip to the "
                             "home master and primary the rate is set from (smoothed)",
                             ["region"], registry=registry)


@dataclass
class _Pace:
    carry: float = 0.0
    last: float = field(default_factory=time.monotonic)


class Admitter:
    def __init__(self, connections: Connections, region: str, home: HomeRegion,
                 metrics: AdmitterMetrics, ceiling_per_s: float) -> None:
        self.connections = connections
        self.region = region
        self.home = home
        self.metrics = metrics
        self.ceiling = ceiling_per_s
        self.latency_s = 0.0
        self._pace: dict[str, _Pace] = {}
        self._waited: dict[str, Waits] = {}

    def loop(self) -> Loop:
        return Loop("onsale-admitter", self.run_once, INTERVAL_S,
                    expected=(RegionUnavailable, TransactionAborted, *REDIS_UNAVAILABLE))

    async def pace(self) -> float:
        """Admissions a second this region can take now, from this round's measure."""
        return queue_order.admit_rate(self.ceiling, await self._measure())

    async def _measure(self) -> float:
        """This round's round trip to the region's master and primary (the slower)."""
        started = time.perf_counter()
        await self.connections.redis_master(self.region).ping()
        redis_s = time.perf_counter() - started
        started = time.perf_counter()
        async with self.home.connection(self.region) as conn:
            await conn.fetchval("SELECT 1")
        pg_s = time.perf_counter() - started
        sample = max(redis_s, pg_s)
        self.latency_s = sample if not self.latency_s else \
            SMOOTHING * sample + (1 - SMOOTHING) * self.latency_s
        self.metrics.latency.labels(self.region).set(self.latency_s)
        return self.latency_s

    async def run_once(self) -> bool:
        async with self.home.connection(self.region) as conn:
            ids = [r["id"] for r in await conn.fetch("SELECT id FROM onsale ORDER BY id")]
        if not ids:
            return False
        rate = await self.pace()
        for onsale_id in ids:
            await self._round(onsale_id, rate)
        return False

    @staticmethod
    async def _waits(conn: asyncpg.Connection, row: asyncpg.Record, start: int,
                     end: int) -> list[float]:
        """Seconds waited by the users at places [start, end), admitted now: the early
        joiners' wait starts at sale_at (their places were drawn then), a later joiner's
        at their join (their place is their seq)."""
        n_early = int(row["n_early"] or 0)
        early = max(0, min(end, n_early) - start)
        since_sale = max(0.0, time.time() - row["sale_at"].timestamp())
        late = await conn.fetch(
            "SELECT extract(epoch FROM now() - joined_at)::float8 AS waited FROM onsale_join "
            "WHERE onsale_id = $1 AND seq >= $2 AND seq < $3", row["id"],
            max(start, n_early), end) if end > n_early else []
        return [since_sale] * early + [float(r["waited"]) for r in late]

    async def _round(self, onsale_id: str, rate: float) -> None:
        pace = self._pace.setdefault(onsale_id, _Pace())
        now = time.monotonic()
        elapsed, pace.last = now - pace.last, now
        async with self.home.transaction(self.region) as conn:
            await conn.execute("SELECT id FROM onsale WHERE id = $1 FOR UPDATE", onsale_id)
            # Its theatre frozen by a move, or moved away (its rows not cleaned up yet):
            # not ours to admit or publish; the new home's admitter goes on from the
            # frontier the move carried.
            if not await conn.fetchval("SELECT bc_onsale_writable($1)", onsale_id):
                self._pace.pop(onsale_id, None)
                self._waited.pop(onsale_id, None)
                return
            known = self._waited.get(onsale_id)
            if known is None:
                known = self._waited[onsale_id] = Waits()
                known.add(w for r in await conn.fetch(STORED_WAITS, onsale_id)
                          for w in [float(r["waited"])] * int(r["n"]))
            await conn.execute("SELECT bc_onsale_seal($1)", onsale_id)
            row = await conn.fetchrow("SELECT * FROM onsale WHERE id = $1", onsale_id)
            assert row is not None
            onsale = OnSale.from_row(row, self.region)
            room = await conn.fetchrow("SELECT * FROM bc_onsale_headroom($1)", onsale_id)
            assert room is not None
            headroom = queue_order.Headroom(
                available=int(room["available"]), locked=int(room["locked"]),
                active=int(room["active"]), joined=int(row["next_seq"]),
                frontier=int(row["frontier"]))
            sealed = row["seed"] is not None
            step, pace.carry = queue_order.advance(headroom, rate if sealed else 0.0,
                                                   elapsed, pace.carry)
            frontier, sold_out = headroom.frontier + step, queue_order.sold_out(headroom)
            if step or sold_out != row["sold_out"]:
                await conn.execute("UPDATE onsale SET frontier = $2, sold_out = $3 "
                                   "WHERE id = $1", onsale_id, frontier, sold_out)
            at_ms, waits = None, []
            if step:
                waits = await self._waits(conn, row, headroom.frontier, frontier)
                at = await conn.fetchval("INSERT INTO onsale_admit (onsale_id, frontier) "
                                         "VALUES ($1, $2) RETURNING at", onsale_id, frontier)
                at_ms = int(at.timestamp() * 1000)
            recorded = int(await conn.fetchval(
                "SELECT count(*) FROM onsale_admit WHERE onsale_id = $1", onsale_id))
            known.add(waits)
            abandoned = queue_waits.abandoned(
                int(await conn.fetchval(EXPIRED_FRONTIER, onsale_id)),
                [int(r["seq"]) for r in await conn.fetch(USED_SEQS, onsale_id)],
                row["seed"], row["n_early"])
        counters = Counters(row["seed"], row["n_early"], headroom.joined, frontier, sold_out,
                            rate if sealed and not sold_out else 0.0, onsale_state.now_ms(),
                            known.quantile(0.5), known.quantile(0.99), abandoned)
        client = self.connections.redis_master(self.region)
        await onsale_state.publish(client, onsale, counters, None)
        if at_ms is not None:
            await onsale_state.add_step(client, onsale_id, frontier, at_ms)
        if await onsale_state.step_count(client, onsale_id) != recorded:
            # The master lost (or never had) some: copy all of them again.
            async with self.home.connection(self.region) as conn:
                steps = await onsale_state.stored_steps(conn, onsale_id)
            await onsale_state.publish(client, onsale, counters, steps)
        labels = (self.region, onsale_id)
        self.metrics.rate.labels(*labels).set(counters.rate_per_s)
        self.metrics.queue.labels(*labels).set(headroom.joined - frontier)
        self.metrics.active.labels(*labels).set(headroom.active)
        self.metrics.sold_out.labels(*labels).set(1 if sold_out else 0)
        self.metrics.wait_p50.labels(*labels).set(
            -1 if counters.wait_p50_s is None else counters.wait_p50_s)
        self.metrics.wait_p99.labels(*labels).set(
            -1 if counters.wait_p99_s is None else counters.wait_p99_s)
        self.metrics.abandoned.labels(*labels).set(abandoned)
        wait = queue_order.estimated_wait_s(headroom.joined - frontier, counters.rate_per_s)
        self.metrics.wait.labels(*labels).set(-1 if wait is None else wait)
        if step:
            self.metrics.admitted.labels(*labels).inc(step)
            for waited in waits:
                self.metrics.waited.labels(*labels).observe(waited)
