"""The Redis seat mirror's one owner: how committed seat changes reach the home master.

PostgreSQL decides every sale and release; the home master's seat state (and
every node's cache, fed by its publishes) is derived from it. So:
1. the transaction that sells or releases seats also writes `mirror_change`
   rows (`bc_sell` for a sale, `record_release` for a release);
2. after commit the caller applies them at once (`apply_now`), so seat maps
   change within milliseconds; if Redis does not answer, nothing is lost:
3. the region worker's `MirrorApplier` applies every change not yet marked
   applied, in order, retrying until Redis answers, then marks it.
The scripts are idempotent (a sale or release already in Redis changes nothing
and publishes nothing), so a change applied by both paths counts once.
What even this misses (a master that restarted empty or lost its last second)
the reconciler (`reconciler.py`) repairs from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import timedelta

import asyncpg

from bookcluster.loops import Loop
from bookcluster.seats.home import HomeRegion
from bookcluster.topology.errors import RegionUnavailable

log = logging.getLogger(__name__)

BATCH = 1000
APPLY_INTERVAL_S = 0.25
KEEP_APPLIED = timedelta(hours=1)  # applied rows kept this long for inspection, then purged

# (op, show_id, booking_id) -> seats
Changes = dict[tuple[str, int, str], list[str]]


def group(rows: Iterable[tuple[str, int, str, str]]) -> Changes:
    """(op, show, booking, seat) rows -> one change per (op, show, booking)."""
    changes: Changes = defaultdict(list)
    for op, show_id, booking_id, seat in rows:
        changes[(op, show_id, booking_id)].append(seat)
    return changes


async def record_release(conn: asyncpg.Connection,
                         freed: list[tuple[str, int, str]]) -> None:
    """Mirror rows for seats this transaction released: (booking, show, seat) each."""
    if freed:
        await conn.execute(
            "INSERT INTO mirror_change (show_id, booking_id, op, seat_id) "
            "SELECT s, b, 'release', x FROM unnest($1::bigint[], $2::text[], $3::text[]) "
            "AS t (s, b, x)",
            [show for _, show, _ in freed], [b for b, _, _ in freed],
            [seat for _, _, seat in freed])


async def apply(home: HomeRegion, region: str, changes: Changes) -> None:
    """Run each change's script on the region's master. Raises RegionUnavailable."""
    for (op, show_id, booking_id), seats in changes.items():
        await home.script(region, op, show_id, [booking_id, *sorted(seats)])


async def apply_now(home: HomeRegion, region: str, changes: Changes) -> None:
    """The fast path right after commit. A failure is only late: the applier retries."""
    try:
        await asyncio.shield(apply(home, region, changes))
    except RegionUnavailable:
        log.warning("Redis of %s did not answer; %d committed change(s) will be applied by "
                    "its worker", region, len(changes))


class MirrorApplier:
    """The region worker's loop: every committed change reaches the master, in order."""

    def __init__(self, home: HomeRegion, region: str) -> None:
        self.home = home
        self.region = region
        self.applied_total = 0

    async def apply_pending(self) -> int:
        """Apply one batch of pending changes (run-once mode). Returns rows applied."""
        async with self.home.connection(self.region) as conn:
            rows = await conn.fetch(
                "SELECT id, op, show_id, booking_id, seat_id FROM mirror_change "
                "WHERE applied_at IS NULL ORDER BY id LIMIT $1", BATCH)
        if not rows:
            return 0
        await apply(self.home, self.region, group(
            (r["op"], r["show_id"], r["booking_id"], r["seat_id"]) for r in rows))
        async with self.home.connection(self.region) as conn:
            await conn.execute("UPDATE mirror_change SET applied_at = now() "
                               "WHERE id = ANY($1::bigint[])", [r["id"] for r in rows])
            await conn.execute(
                "DELETE FROM mirror_change WHERE id IN (SELECT id FROM mirror_change "
                "WHERE applied_at < now() - $1::interval LIMIT $2)", KEEP_APPLIED, BATCH)
        self.applied_total += len(rows)
        return len(rows)

    async def _round(self) -> bool:
        return await self.apply_pending() == BATCH  # a full batch: the next one at once

    def loop(self) -> Loop:
        """Every APPLY_INTERVAL_S; Redis not answering: the changes wait (backed off)."""
        return Loop("mirror", self._round, APPLY_INTERVAL_S, expected=(RegionUnavailable,))
