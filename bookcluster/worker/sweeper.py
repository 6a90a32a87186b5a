"""Region-local sweeper: INITIATED bookings past their hold become EXPIRED.

Each region's worker runs one (`worker.py`); `FOR UPDATE SKIP LOCKED` lets
several sweep side by side without waiting on each other or on a confirm that
holds a booking row. `sweep_once()` is the run-once mode.

Old idempotency keys are deleted apart from expiry, in statements of at most
`KEY_BATCH` rows and at most `KEY_BATCHES` of them a round (`clean_keys_once()`):
a backlog of keys costs a few bounded statements per round, and can never make
the expiry transaction miss its deadline.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from bookcluster.booking import ledger
from bookcluster.booking.holds import released
from bookcluster.errors import TransactionAborted
from bookcluster.loops import Loop
from bookcluster.seats import mirror
from bookcluster.seats.home import HomeRegion
from bookcluster.topology.errors import RegionUnavailable

log = logging.getLogger(__name__)

BATCH = 500
# How long an abandoned hold is watched for a PostgreSQL write that lands late.
ABANDONED_WATCH_S = 120.0
IDEMPOTENCY_RETENTION = timedelta(hours=24)  # keys are kept at least this long
# ~5,000 index-found deletes take tens of ms: far inside the write deadline.
KEY_BATCH = 5000
KEY_BATCHES = 4  # per round: a backlog drains at 20,000 keys a sweep interval


class Sweeper:
    def __init__(self, home: HomeRegion, region: str, interval_s: float) -> None:
        self.home = home
        self.region = region
        self.interval_s = interval_s
        self.expired_total = 0
        self.keys_deleted_total = 0

    async def sweep_once(self) -> int:
        """Expire one batch of lapsed (or abandoned) holds. Returns how many it expired."""
        abandoned = await self.home.abandoned(self.region)
        async with self.home.transaction(self.region) as conn:
            # Only theatres this region may write now, each fenced like any write
            # (`bc_writable`): a moving theatre's holds are expired at its new home.
            theatres = await conn.fetchval(
                "SELECT bc_writable(ARRAY(SELECT DISTINCT sc.theatre_id FROM booking b "
                "JOIN show sh ON sh.id = b.show_id JOIN screen sc ON sc.id = sh.screen_id "
                "WHERE b.status = 'INITIATED' "
                "AND (b.expires_at < now() OR b.id = ANY($1::text[]))))", list(abandoned))
            rows = await conn.fetch(
                "SELECT b.id FROM booking b JOIN show sh ON sh.id = b.show_id "
                "JOIN screen sc ON sc.id = sh.screen_id WHERE b.status = 'INITIATED' "
                "AND (b.expires_at < now() OR b.id = ANY($2::text[])) "
                "AND sc.theatre_id = ANY($3::text[]) "
                "ORDER BY b.expires_at LIMIT $1 FOR UPDATE OF b SKIP LOCKED",
                BATCH, list(abandoned), theatres) if theatres else []
            expired = [r["id"] for r in rows]
            freed = await ledger.expire(conn, expired)  # under the row locks just taken
        await mirror.apply_now(self.home, self.region, released(freed))
        old = time.time() - ABANDONED_WATCH_S
        await self.home.forget_abandoned(
            self.region, [b for b, at in abandoned.items() if b in expired or at < old])
        self.expired_total += len(expired)
        return len(expired)

    async def clean_keys_once(self) -> int:
        """Delete one batch of idempotency keys past retention, in its own statement.
        SKIP LOCKED: a key being replayed or deleted elsewhere is left for the next one."""
        async with self.home.connection(self.region) as conn:
            status = await conn.execute(
                "DELETE FROM idempotency WHERE ctid IN (SELECT ctid FROM idempotency "
                "WHERE created_at < now() - $1::interval LIMIT $2 FOR UPDATE SKIP LOCKED)",
                IDEMPOTENCY_RETENTION, KEY_BATCH)
        deleted = int(status.split()[-1])  # "DELETE <n>"
        self.keys_deleted_total += deleted
        return deleted

    async def run_once(self) -> None:
        """One round: expiry until a batch is not full, then old idempotency keys (after
        expiry and apart from it: a failure of one never stops the other; the round
        fails with expiry's failure, or else the cleanup's)."""
        failed: Exception | None = None
        try:
            while await self.sweep_once() == BATCH:
                pass
        except Exception as exc:  # raised below, after the cleanup
            failed = exc
        try:
            for _ in range(KEY_BATCHES):
                if await self.clean_keys_once() < KEY_BATCH:
                    break
        except Exception:
            if failed is None:
                raise
            log.warning("idempotency cleanup skipped too", exc_info=True)
        if failed is not None:
            raise failed

    def loop(self) -> Loop:
        return Loop("sweeper", self.run_once, self.interval_s,
                    expected=(RegionUnavailable, TransactionAborted))
