"""Moving a theatre while it sells: the move's journal and the Mover that drives it.

The operator starts one with `bookcluster topology move THEATRE --to REGION`
(`bookcluster/ops/moves.py`); the source region's worker finishes one whose driver
stopped (`lapsed`, `drive_unfinished`).

Each step is recorded in the source region's `theatre_move` row, so a mover
that dies is resumed (the same command again) or rolled back (`--rollback`):

0. **first copy**, while the theatre sells: the source exports its rows (show
   seats, bookings and their seats, payments, payment events, tickets,
   notifications, idempotency keys, pending outbox rows, the on-sales of its shows
   with their queue, admission steps and passes' claims) as of one snapshot; the
   target imports them in a transaction it keeps open, so nobody sees them.
1. **freeze** (`frozen`): the source master's owner keys of the theatre's shows
   say "moving" (holds are refused before they publish anything); then, under
   the theatre's exclusive advisory lock, which waits for every write in flight
   (`bc_own` holds it shared), the source's record becomes FROZEN. Every later
   write answers 503 `theatre_moving` (joins of its on-sales and passes' claims
   too: `onsale_fence.sql`; its admitter pauses); reads go on. A theatre with an
   on-sale that also covers another theatre's shows is not moved (one queue, one
   home).
2. **catch up and commit** (`committed`): what changed since the first copy's
   snapshot is exported and applied in the same target transaction, which then
   records the target as owner at epoch + 1 and commits. That commit is the
   move's decision: before it nothing of the copy is visible anywhere (an abort
   unfreezes the source; the target's transaction dies with it); after it the
   move only goes forward. A resumed move copies everything here instead.
3. The target master is rebuilt from the target's PostgreSQL: holds with their
   absolute expiry (so their remaining TTL), sales, blocked seats, at versions
   above the source's and the target's generation; its on-sales' definitions,
   counters and admission steps (positions are answered there from then on, its
   admitter goes on from the frontier carried; a pass, signed with the cluster's
   key, is as valid there as it was here).
4. The topology at epoch + 1 (the theatre mapped to the target) is stored in
   every region.
5. **flip** (`flipped`): the source's record becomes MOVED (target, epoch + 1)
   and its owner keys say so. Writes go on at the target; a node that has not
   heard gets MOVED, adopts epoch + 1 from its own region's store and routes
   there. The freeze ends here.
6. Every node and worker is told to route by epoch + 1; topology.yaml is
   rewritten.
7. **clean up** (`done`): the source deletes the theatre's rows and seat state
   (and its on-sales' published state).

**No outcome is guessed.** The target commit of step 2 is the move's decision, and a
commit whose answer was lost (a timeout, a paused synchronous standby, a primary that
failed over) may still happen. So the target transaction holds the theatre's *move
lock* from its first statement to its end, and `resolve()` learns the outcome from the
target's current leader: it takes that lock (then the record says committed or not,
for good) or finds who holds it — a transaction idle in the middle of its copy (a
mover that died or was paused) is ended, which can only abort it; one whose COMMIT
waits for the synchronous standby is waited for, never cancelled (cancelling would
commit it locally, unreplicated). A rollback records the move in the target's
`move_abort` under the same lock, and the target transaction checks that record
before it commits: a paused mover that wakes up after its move was rolled back can
never make the target an owner.

**Moves finish themselves.** The journal names its `driver` (the operator's mover,
renewing a lease every second), and the source region's worker takes over a journal
whose lease lapsed (`drive_unfinished`): a move not committed at its target is rolled
back (the source owns it again), a committed one is driven to done. Every step a
driver records is a compare-and-set on `driver`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from asyncpg.transaction import Transaction

from bookcluster.booking import onsale_state
from bookcluster.seats import keys
from bookcluster.seats.reconcile import pg_wanted
from bookcluster.seats.scripts import REPAIR
from bookcluster.stores import replication
from bookcluster.stores.connections import make_master
from bookcluster.stores.ownership import OWNED, Owner, shows_by_theatre
from bookcluster.stores.sessions import connect
from bookcluster.topology.document import edit_file, parse_stored, with_changes
from bookcluster.topology.errors import TopologyError
from bookcluster.topology.load import parse_topology
from bookcluster.topology.model import Topology
from bookcluster.topology.runstate import remember_applied
from bookcluster.worker import epochs

REDIS_TIMEOUT_S = 5.0
# The catch-up after the freeze takes rows changed since the first copy's snapshot, less
# this: longer than any write transaction (a write's deadline is 1.9 s), so one that
# began before the snapshot and committed after it is caught up too.
CATCH_UP_MARGIN = timedelta(seconds=10)
EXPORT = ("SELECT d, (SELECT jsonb_object_agg(key, jsonb_array_length(value)) "
          "FROM jsonb_each(d)) AS counts FROM bc_export_theatre($1::bigint[], $2) d")
IMPORT = "SELECT bc_import_theatre($1, $2::bigint[], $3::jsonb, $4)"
# The theatre's move lock at a target: held by the mover's target transaction from its
# first statement to its end. The two-key advisory lock space (objsubid 2) is apart from
# the one-key locks the write path takes (bc_theatre_lock).
MOVE_LOCK_CLASS = 1917
MOVE_LOCK_KEY = "hashtext($2) & 2147483647"
TAKE_MOVE_LOCK = f"SELECT pg_advisory_xact_lock($1, {MOVE_LOCK_KEY})"
TRY_MOVE_LOCK = f"SELECT pg_try_advisory_xact_lock($1, {MOVE_LOCK_KEY})"
MOVE_LOCK_HOLDER = f"""
SELECT a.pid, a.state, a.wait_event FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.classid = $1 AND l.objid = ({MOVE_LOCK_KEY})::oid
  AND l.objsubid = 2 AND l.granted"""
# A driver renews its journal's lease this often; a lease not renewed for LEASE_S is
# taken over by the source region's worker.
HEARTBEAT_S = 1.0
LEASE_S = 5.0
RESOLVE_POLL_S = 0.2
RESOLVE_STEP_S = 5.0

COMMITTED, NOT_COMMITTED, PENDING = "committed", "not committed", "pending"
# The on-sales of the moving shows, and those of them that also cover another theatre's
# shows (such a queue cannot follow one theatre).
ONSALES_OF = "SELECT DISTINCT onsale_id FROM onsale_show WHERE show_id = ANY($1::bigint[])"
SPANNING = f"""
SELECT o.id, array_agg(DISTINCT sc.theatre_id ORDER BY sc.theatre_id) AS theatres
FROM onsale o JOIN show sh ON sh.id = ANY (o.show_ids) JOIN screen sc ON sc.id = sh.screen_id
WHERE o.id IN ({ONSALES_OF}) GROUP BY o.id HAVING count(DISTINCT sc.theatre_id) > 1"""

log = logging.getLogger(__name__)


def driver_name(role: str) -> str:
    return f"{role}@{socket.gethostname()}:{os.getpid()}"


class MoveFailed(RuntimeError):
    """The move stopped; the message says where the theatre lives and what to do."""


@dataclass
class MoveRecord:
    """The source's `theatre_move` row."""

    id: int
    theatre: str
    source: str
    target: str
    from_epoch: int
    to_epoch: int
    step: str
    detail: dict[str, Any] = field(default_factory=dict)
    driver: str = ""


class Mover:
    def __init__(self, topology: Topology, document: str, record: MoveRecord,
                 progress: Callable[[str], None] = print, timeout_s: float = 10.0,
                 cluster_file: Topology | None = None, driver: str | None = None) -> None:
        self.topology = topology  # as the cluster runs it (epoch from_epoch)
        self.driver = driver or driver_name("mover")
        self.document = document
        self.record = record
        self._progress = progress
        self.timeout_s = timeout_s
        self.cluster_file = cluster_file  # the file to rewrite (None: none)
        self.shows: list[int] = []
        self.frozen_at: float | None = None
        self.report: dict[str, Any] = dict(record.detail)
        # One session per region and one client per master, opened before the freeze:
        # a new PostgreSQL login costs tens of ms (SCRAM), and the freeze waits for none.
        self._pg: dict[str, asyncpg.Connection] = {}
        self._redis: dict[str, aioredis.Redis] = {}
        self._open: Transaction | None = None  # the target's, from the first copy on
        self._since: datetime | None = None  # the catch-up takes rows changed after it
        self._heartbeat: asyncio.Task[None] | None = None
        self._noted = ""  # resolve's last line: said once, not every poll

    async def open(self) -> Mover:
        for region in self.topology.regions:
            self._pg[region] = await connect(self.topology, region)
            # Wherever the master is now (Sentinel may have promoted a replica).
            self._redis[region] = make_master(self.topology, region, near=region,
                                              timeout_s=REDIS_TIMEOUT_S)
        self.shows = (await shows_by_theatre(self._pg[self.record.source],
                                             [self.record.theatre])).get(self.record.theatre, [])
        return self

    def _note(self, line: str) -> None:
        if line != self._noted:
            self._noted = line
            self.progress(line)

    def progress(self, line: str) -> None:
        """A progress line; while the theatre's writes are frozen, for how long so far."""
        frozen_at = self.report.get("frozen_at")
        if frozen_at is not None and "freeze_s" not in self.report:
            line += f" [frozen {time.time() - frozen_at:.3f}s]"
        self._progress(line)

    async def reconnect(self) -> None:
        """New sessions for any a failure may have left unusable."""
        for region, conn in list(self._pg.items()):
            if conn.is_closed() or conn.is_in_transaction():
                conn.terminate()
                self._pg[region] = await connect(self.topology, region)

    async def close(self) -> None:
        await self.stop_heartbeat()
        await self._release()
        for conn in self._pg.values():
            conn.terminate()  # nothing of ours is in flight that should finish
        for client in self._redis.values():
            await client.aclose()
        self._pg.clear()
        self._redis.clear()

    async def __aenter__(self) -> Mover:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- steps ------------------------------------------------------------------

    async def run(self, pause_after: str | None = None) -> dict[str, Any]:
        """From wherever the record says, to done. Returns the report."""
        rec = self.record
        if rec.step == "frozen":
            outcome = await self.resolve()
            if outcome == COMMITTED:
                self.progress("the copy had committed at the target; going on")
                await self.record_step("committed")
            elif outcome == PENDING:
                raise self.pending()
            else:
                await self.pause(pause_after, "frozen")
                await self.copy_and_commit()
        if rec.step == "committed":
            await self.pause(pause_after, "committed")
            await self._rebuild_target()
            new_topology, new_document = self._next_topology()
            await epochs.store(new_topology, rec.to_epoch, new_document, self._pg)
            self.progress(f"epoch {rec.to_epoch} stored in {len(new_topology.regions)} regions")
            await self._flip()
            rec.step = "flipped"
        if rec.step == "flipped":
            await self.pause(pause_after, "flipped")
            await self._announce()
            await self._clean_source()
            rec.step = "done"
        return self.report

    async def freeze(self, owner: Owner) -> None:
        """Step 1, also recording the move. Raises MoveFailed (source unfrozen)."""
        rec = self.record
        await self._owner_keys(rec.source, "moving")
        self.progress(f"freezing {rec.theatre} in {rec.source} ({len(self.shows)} shows): "
                      "waiting for writes in flight ...")
        began = time.monotonic()
        conn = self._pg[rec.source]
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = {int(self.timeout_s * 1000)}")
                await conn.execute("SELECT pg_advisory_xact_lock(bc_theatre_lock($1))",
                                   rec.theatre)
                state = await conn.fetchval(
                    "SELECT state FROM theatre_owner WHERE theatre_id = $1 FOR UPDATE",
                    rec.theatre)
                if state != OWNED:
                    raise MoveFailed(f"{rec.theatre} is {state} in {rec.source}, not OWNED")
                # Under the lock: an on-sale made since the first look is fenced from now.
                await self._refuse_spanning_onsales(conn)
                await conn.execute(
                    "UPDATE theatre_owner SET state = 'FROZEN', owner = $2, updated_at = now() "
                    "WHERE theatre_id = $1", rec.theatre, rec.target)
                rec.id = await conn.fetchval(
                    "INSERT INTO theatre_move (theatre_id, source, target, from_epoch, "
                    "to_epoch, step, driver) VALUES ($1, $2, $3, $4, $5, 'frozen', $6) "
                    "RETURNING id", rec.theatre, rec.source, rec.target, rec.from_epoch,
                    rec.to_epoch, self.driver)
                rec.driver = self.driver
        except (asyncpg.LockNotAvailableError, MoveFailed, asyncpg.PostgresError) as exc:
            await self._owner_keys(rec.source, owner.redis_value())
            raise MoveFailed(f"could not freeze {rec.theatre} ({exc}); nothing changed, it "
                             f"stays in {rec.source}") from None
        self.frozen_at = time.time()
        self.report["frozen_at"] = self.frozen_at
        self.start_heartbeat()
        self.progress(f"frozen in {time.monotonic() - began:.3f}s: new writes get 503 "
                      "theatre_moving, reads go on")

    async def precopy(self) -> None:
        """Before the freeze, while the theatre sells: the source exports its rows as of
        one snapshot and the target imports them in a transaction it keeps open, so
        nobody sees them. The frozen copy is then only what changed since."""
        rec = self.record
        src, dst = self._pg[rec.source], self._pg[rec.target]
        await self._refuse_spanning_onsales(src)
        async with src.transaction(isolation="repeatable_read", readonly=True):
            as_of = await src.fetchval("SELECT now()")
            row = await src.fetchrow(EXPORT, self.shows, None)
        await self._begin_target()
        await dst.execute(IMPORT, rec.theatre, self.shows, row["d"], None)
        self._since = as_of - CATCH_UP_MARGIN
        self.report["rows"] = json.loads(row["counts"])
        self.progress(f"copied {sum(self.report['rows'].values())} rows to {rec.target} "
                      "while it sells, not committed: " + _counts(self.report["rows"]))

    async def _begin_target(self) -> Transaction:
        """The target transaction: the theatre's move lock first (see `resolve`), then
        whatever an earlier attempt left of the theatre there goes."""
        dst = self._pg[self.record.target]
        self._open = opened = dst.transaction()
        await opened.start()
        await dst.execute(TAKE_MOVE_LOCK, MOVE_LOCK_CLASS, self.record.theatre)
        await dst.execute("SELECT bc_forget_theatre($1::bigint[])", self.shows)
        return opened

    async def _refuse_spanning_onsales(self, conn: asyncpg.Connection) -> None:
        rows = await conn.fetch(SPANNING, self.shows)
        if rows:
            said = "; ".join(f"{r['id']} covers {', '.join(r['theatres'])}" for r in rows)
            raise MoveFailed(f"an on-sale of {self.record.theatre}'s shows also covers other "
                             f"theatres' ({said}): its queue has one home, so "
                             f"{self.record.theatre} moves once that on-sale ends")

    async def abandon_precopy(self) -> None:
        if self._open is not None:
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError):
                await self._open.rollback()
            self._open = None

    def lose_target_transaction(self) -> None:
        """A commit whose answer was lost: its session is ended by `reconnect()` (the
        target aborts what it had not committed); the outcome is `resolve()`'s to learn."""
        self._open = None

    async def copy_and_commit(self) -> None:
        """Step 2, frozen: the source exports what changed since the first copy (or, with
        none made, everything), the target applies it and commits as owner."""
        rec = self.record
        src, dst = self._pg[rec.source], self._pg[rec.target]
        row = await src.fetchrow(EXPORT, self.shows, self._since)
        opened = self._open
        if opened is None:  # resumed: nothing copied yet (or it was rolled back)
            opened = await self._begin_target()
            self.report["rows"] = json.loads(row["counts"])
        if await dst.fetchval("SELECT 1 FROM move_abort WHERE source = $1 AND move_id = $2",
                              rec.source, rec.id):
            raise MoveFailed(f"the move of {rec.theatre} was rolled back while this mover "
                             "was away; nothing of it committed")
        await dst.execute(IMPORT, rec.theatre, self.shows, row["d"], rec.to_epoch)
        await opened.commit()
        self._open = None
        if not await self._replicated(dst, wait_s=self.timeout_s):
            raise self.pending()
        caught_up = json.loads(row["counts"]) if self._since is not None else {}
        self.report["caught_up"] = caught_up
        await self.record_step("committed")
        self.progress(f"caught up {sum(caught_up.values())} changed rows and committed at "
                      f"{rec.target} ({_counts(caught_up)}); it owns {rec.theatre} at epoch "
                      f"{rec.to_epoch}")

    async def _rebuild_target(self) -> None:
        """Step 3: the target master's seat state of the theatre, from its PostgreSQL."""
        rec = self.record
        src, dst = self._redis[rec.source], self._redis[rec.target]
        conn = self._pg[rec.target]
        generation = int((await dst.hget(keys.MIRROR_GENERATION, "gen")) or 0)
        floor = generation << keys.GENERATION_SHIFT
        versions = [int(v or 0) for v in await src.mget([keys.show_version(s)
                                                         for s in self.shows])]
        rows = await conn.fetch(
            "SELECT show_id, seat_id, status, hold_booking_id, hold_expires_at, "
            "booked_booking_id FROM show_seat WHERE show_id = ANY($1::bigint[]) "
            "AND status <> 'AVAILABLE' ORDER BY show_id, seat_id", self.shows)
        now = time.time()
        wanted: dict[int, list[str]] = {show: [] for show in self.shows}
        for row in rows:
            want = pg_wanted(row, now)
            if want != "A":  # (seat, expected, wanted): the keys are deleted just before
                wanted[row["show_id"]] += [row["seat_id"], "A", want]
        holds = sum(1 for triples in wanted.values() for w in triples[2::3] if w[0] == "H")
        repair = dst.register_script(REPAIR)
        async with dst.pipeline(transaction=False) as pipe:
            for show, version in zip(self.shows, versions, strict=True):
                pipe.delete(keys.show_holds(show), keys.show_booked(show),
                            keys.show_blocked(show))
                # No node may see a version go backwards: above the source's, and at
                # least the target's generation.
                await repair(keys=keys.show_keys(show), client=pipe, args=[
                    keys.SEAT_CHANGES_CHANNEL, show, max(version + 1, floor), *wanted[show]])
                pipe.set(keys.show_owner(show), str(rec.to_epoch))
            await pipe.execute()
        for onsale in [r["onsale_id"] for r in await conn.fetch(ONSALES_OF, self.shows)]:
            await onsale_state.publish_stored(conn, dst, onsale, rec.target)
        self.report["holds"] = holds
        self.progress(f"{rec.target}'s master rebuilt from PostgreSQL: {len(self.shows)} shows, "
                      f"{holds} live hold(s) carried with their remaining TTL")

    def _next_topology(self) -> tuple[Topology, str]:
        rec = self.record
        document = with_changes(self.document, rec.to_epoch, {rec.theatre: rec.target})
        return parse_stored(document, self.topology), document

    async def _flip(self) -> None:
        """Step 5: the source says MOVED; writes go on at the target."""
        rec = self.record
        conn = self._pg[rec.source]
        async with conn.transaction():
            await conn.execute(
                "UPDATE theatre_owner SET state = 'MOVED', owner = $2, epoch = $3, "
                "updated_at = now() WHERE theatre_id = $1 AND state = 'FROZEN'",
                rec.theatre, rec.target, rec.to_epoch)
            frozen_at = self.report.get("frozen_at")
            if frozen_at is not None:
                self.report["freeze_s"] = round(time.time() - frozen_at, 3)
            await self.record_step("flipped")
        await self._owner_keys(rec.source, f"moved {rec.target} {rec.to_epoch}")
        freeze = self.report.get("freeze_s")
        self.progress(f"flipped: {rec.source} answers MOVED, {rec.target} takes the writes"
                      + (f"; writes were frozen for {freeze:.3f}s" if freeze is not None
                         else ""))

    async def _announce(self) -> None:
        """Step 6: every process routes by the new epoch; the file says so."""
        rec = self.record
        new_topology, new_document = self._next_topology()
        try:
            token = epochs.operator_token(self.topology)
        except epochs.ApplyFailed as exc:  # they get MOVED and catch up from their store
            self.progress(f"processes not told ({exc}); they adopt epoch {rec.to_epoch} "
                          "from their region's store")
        else:
            reached = await epochs.push(epochs.processes(self.topology, new_topology),
                                       rec.to_epoch, token)
            late = [r for r in reached if r.epoch != rec.to_epoch]
            self.progress(f"epoch {rec.to_epoch} taken by {len(reached) - len(late)} of "
                          f"{len(reached)} processes")
            for r in late:  # the move stands: they get MOVED and catch up from their store
                self.progress(f"  {r.name} ({r.address}) did not take it yet: {r.error}")
        remember_applied(self.topology.settings.run_dir, new_document)
        if self.cluster_file is None:  # the worker: the operator's file is theirs
            return
        path = self.cluster_file.path
        file_text = path.read_text()
        if file_text != new_document:
            try:  # only its `epoch:` and the theatre's line change (a round-trip edit)
                at = parse_topology(file_text, path).epoch
                if at not in (rec.from_epoch, rec.to_epoch):  # older: one edit is not enough
                    raise TopologyError(str(path), "epoch", f"at {at}, the cluster was at "
                                        f"{rec.from_epoch}")
                path.write_text(edit_file(file_text, rec.to_epoch, {rec.theatre: rec.target}))
            except (TopologyError, OSError) as exc:  # the move stands; the file lags
                self.progress(f"{path} not edited ({exc}): `bookcluster topology pull` "
                              f"writes epoch {rec.to_epoch} to it")
                return
        self.progress(f"{path} now maps {rec.theatre} to {rec.target} at epoch {rec.to_epoch}")

    async def _clean_source(self) -> None:
        """Step 7: the source forgets the theatre's rows and seat state."""
        rec = self.record
        conn = self._pg[rec.source]
        async with conn.transaction():
            onsales = [r["onsale_id"] for r in await conn.fetch(ONSALES_OF, self.shows)]
            deleted = await conn.fetchval("SELECT bc_forget_theatre($1::bigint[])", self.shows)
            await self.record_step("done")
        client = self._redis[rec.source]
        for show in self.shows:
            await client.delete(keys.show_holds(show), keys.show_booked(show),
                                keys.show_blocked(show), keys.show_layout(show))
        for onsale in onsales:
            await onsale_state.forget(client, onsale)
        self.progress(f"{rec.source} cleaned up ({deleted} rows); done")

    async def rollback(self) -> None:
        """Undo a move that has not committed at its target: the source owns it again.
        Only once the target's leader says it did not commit, and can no longer."""
        rec = self.record
        outcome = await self.resolve(fence=True) if rec.step == "frozen" else COMMITTED
        if outcome == COMMITTED:
            raise MoveFailed(f"the move of {rec.theatre} committed at {rec.target}; it can "
                             f"only go forward: `bookcluster topology move {rec.theatre} "
                             f"--to {rec.target}` (then move it back if you must)")
        if outcome == PENDING:
            raise self.pending()
        await self.unfreeze()

    async def unfreeze(self) -> None:
        """The source owns the theatre again (its move resolved as not committed)."""
        rec = self.record
        await self.reconnect()
        conn = self._pg[rec.source]
        async with conn.transaction():
            epoch = await conn.fetchval(
                "UPDATE theatre_owner SET state = 'OWNED', owner = NULL, updated_at = now() "
                "WHERE theatre_id = $1 AND state = 'FROZEN' RETURNING epoch", rec.theatre)
            await self.record_step("aborted")
        if epoch is not None:
            await self._owner_keys(rec.source, str(epoch))
        self.progress(f"rolled back: {rec.theatre} is writable in {rec.source} again")

    async def finish(self) -> None:
        """A driver that took the journal over: a move not committed at its target is
        rolled back (the shortest freeze), a committed one is driven to done."""
        if self.record.step == "frozen":
            outcome = await self.resolve(fence=True)
            if outcome == PENDING:
                raise self.pending()
            if outcome == NOT_COMMITTED:
                await self.unfreeze()
                return
            await self.record_step("committed")
        await self.run()

    # -- the outcome at the target ---------------------------------------------------

    async def resolve(self, *, fence: bool = False, wait_s: float | None = None) -> str:
        """Whether the move committed at its target, read from the target's leader now.

        COMMITTED and NOT_COMMITTED are final (with `fence`, NOT_COMMITTED also records
        the move in the target's `move_abort`, so it can never commit later). PENDING
        after `wait_s` (default: the mover's timeout): a COMMIT still waits on the
        target's synchronous standby, or the target has no reachable leader.
        """
        deadline = time.monotonic() + (self.timeout_s if wait_s is None else wait_s)
        while True:
            try:
                # A fence whose commit waits on a stalled standby must not hang us: it
                # keeps the move lock, so the next look finds it waiting (PENDING).
                async with asyncio.timeout(RESOLVE_STEP_S):
                    outcome = await self._resolve_once(fence)
            except (OSError, TimeoutError, asyncpg.PostgresError,
                    asyncpg.InterfaceError) as exc:
                self._note(f"cannot read the outcome at {self.record.target} yet: {exc}")
                outcome = PENDING
            if outcome != PENDING or time.monotonic() >= deadline:
                return outcome
            await asyncio.sleep(RESOLVE_POLL_S)

    async def _resolve_once(self, fence: bool) -> str:
        rec = self.record
        conn = await connect(self.topology, rec.target)  # its leader now
        try:
            async with conn.transaction():
                if await conn.fetchval(TRY_MOVE_LOCK, MOVE_LOCK_CLASS, rec.theatre):
                    # No mover transaction is open at the target: what it says is final,
                    # once its standby has the commit (a failover could lose it before).
                    if await self._owns_at(conn):
                        return COMMITTED if await self._replicated(conn) else PENDING
                    if fence:
                        await conn.execute(
                            "INSERT INTO move_abort (source, move_id, theatre_id) VALUES "
                            "($1, $2, $3) ON CONFLICT DO NOTHING", rec.source, rec.id,
                            rec.theatre)
                    return NOT_COMMITTED
            holder = await conn.fetchrow(MOVE_LOCK_HOLDER, MOVE_LOCK_CLASS, rec.theatre)
            if holder is not None and holder["wait_event"] == "SyncRep":
                # Its COMMIT waits on the standby: never ended, which would commit it
                # here, unreplicated. The theatre stays frozen until it is known.
                self._note(f"the commit at {rec.target} waits for its synchronous "
                           "standby; the theatre stays frozen until it is known")
            elif holder is not None:
                # The transaction of a mover that died, hangs or gave up, before its COMMIT
                # (idle in it, or a statement still running): ending it can only abort it.
                await conn.execute("SELECT pg_terminate_backend($1)", holder["pid"])
                self.progress(f"ended an abandoned move transaction at {rec.target} "
                              f"(pid {holder['pid']}, {holder['state']})")
            return PENDING
        finally:
            conn.terminate()

    async def _owns_at(self, conn: asyncpg.Connection) -> bool:
        rec = self.record
        row = await conn.fetchrow(
            "SELECT state, epoch FROM theatre_owner WHERE theatre_id = $1", rec.theatre)
        return row is not None and row["state"] == OWNED and row["epoch"] == rec.to_epoch

    async def _replicated(self, conn: asyncpg.Connection, wait_s: float = 0.0) -> bool:
        """Whether the target's synchronous standby has flushed what its primary wrote
        (a region without a standby promises only its primary)."""
        if self.topology.region(self.record.target).pg_standby is None:
            return True
        if await replication.wait_standby_flushed(conn, wait_s):
            return True
        self._note(f"{self.record.target}'s synchronous standby does not have the move's "
                   "commit yet")
        return False

    def pending(self) -> MoveFailed:
        rec = self.record
        return MoveFailed(
            f"the outcome of moving {rec.theatre} to {rec.target} is not known yet (its "
            f"commit waits for {rec.target}'s synchronous standby, or {rec.target} has no "
            f"leader): {rec.theatre} stays frozen; {rec.source}'s worker finishes the move "
            "as soon as it is known")

    # -- the journal's lease -----------------------------------------------------------

    async def _release(self) -> None:
        """A driver that stops before the end lets go of its journal at once, so the
        worker need not wait for the lease to lapse (best effort: else it lapses)."""
        rec = self.record
        conn = self._pg.get(rec.source)
        if not rec.id or conn is None or conn.is_closed() or conn.is_in_transaction():
            return
        with contextlib.suppress(OSError, TimeoutError, asyncpg.PostgresError,
                                 asyncpg.InterfaceError):
            async with asyncio.timeout(1.0):
                await conn.execute(
                    "UPDATE theatre_move SET driver = '' WHERE id = $1 AND driver = $2 "
                    "AND step NOT IN ('done', 'aborted')", rec.id, self.driver)

    def start_heartbeat(self) -> None:
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._renew_lease(), name="move-lease")

    async def stop_heartbeat(self) -> None:
        task, self._heartbeat = self._heartbeat, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _renew_lease(self) -> None:
        """Every HEARTBEAT_S, on a session of its own: this driver lives."""
        rec = self.record
        conn: asyncpg.Connection | None = None
        try:
            while True:
                await asyncio.sleep(HEARTBEAT_S)
                try:
                    if conn is None or conn.is_closed():
                        conn = await connect(self.topology, rec.source)
                    renewed = await conn.fetchval(
                        "UPDATE theatre_move SET updated_at = now() WHERE id = $1 "
                        "AND driver = $2 AND step NOT IN ('done', 'aborted') RETURNING id",
                        rec.id, self.driver)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("renewing the lease of move %s failed: %s", rec.id, exc)
                    if conn is not None:
                        conn.terminate()
                    conn = None
                    continue
                if renewed is None:
                    return  # done, or another driver took it: its steps are not ours
        finally:
            if conn is not None:
                conn.terminate()

    # -- helpers ------------------------------------------------------------------

    async def pause(self, pause_after: str | None, step: str) -> None:
        """Tests and drills: stop here, as a mover that crashed would (SIGKILL it), or
        that hangs (SIGSTOP it); a line on stdin (Enter) lets it go on."""
        if pause_after == step:
            self.progress(f"paused after {step} (kill me, or press Enter to go on)")
            line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            self.progress(f"going on after {step}" if line else "stdin closed: going on")

    async def _owner_keys(self, region: str, value: str) -> None:
        async with self._redis[region].pipeline(transaction=False) as pipe:
            for show in self.shows:
                pipe.set(keys.show_owner(show), value)
            await pipe.execute()

    async def record_step(self, step: str) -> None:
        """On the source's session (inside its transaction when one is open); only while
        this mover is the journal's driver."""
        rec = self.record
        recorded = await self._pg[rec.source].fetchval(
            "UPDATE theatre_move SET step = $2, detail = $3::jsonb, updated_at = now() "
            "WHERE id = $1 AND driver = $4 RETURNING id", rec.id, step,
            json.dumps(self.report, default=str), self.driver)
        if recorded is None:
            raise MoveFailed(f"the move of {rec.theatre} is driven by another now (this "
                             f"driver's lease lapsed); {self.driver} stops")
        rec.step = step


async def unfinished(topology: Topology, theatre: str) -> MoveRecord | None:
    """The theatre's move that has not reached done or aborted, if any (in any region)."""
    for region in topology.regions:
        conn = await connect(topology, region)
        try:
            row = await conn.fetchrow(
                "SELECT * FROM theatre_move WHERE theatre_id = $1 "
                "AND step NOT IN ('done', 'aborted')", theatre)
        finally:
            await conn.close()
        if row is not None:
            return _record(row)
    return None


async def journal(topology: Topology, record: MoveRecord) -> MoveRecord:
    """The journal of `record`'s move as its source has it now."""
    conn = await connect(topology, record.source)
    try:
        return _record(await conn.fetchrow("SELECT * FROM theatre_move WHERE id = $1",
                                           record.id))
    finally:
        await conn.close()


def _record(row: asyncpg.Record) -> MoveRecord:
    return MoveRecord(row["id"], row["theatre_id"], row["source"], row["target"],
                      row["from_epoch"], row["to_epoch"], row["step"],
                      json.loads(row["detail"]), row["driver"])


CLAIM = """
UPDATE theatre_move SET driver = $2, updated_at = now()
WHERE id = $1 AND step NOT IN ('done', 'aborted')
  AND (driver IN ($2, '') OR updated_at < now() - make_interval(secs => $3))
RETURNING *"""


async def claim(topology: Topology, record: MoveRecord, driver: str,
                wait_s: float = 0.0) -> MoveRecord | None:
    """Become the journal's driver once its driver's lease lapsed (waiting up to `wait_s`
    for that). None: finished meanwhile, or its driver still lives."""
    conn = await connect(topology, record.source)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            row = await conn.fetchrow(CLAIM, record.id, driver, LEASE_S)
            if row is not None:
                return _record(row)
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def lapsed(conn: asyncpg.Connection, region: str) -> list[int]:
    """This region's unfinished moves whose driver stopped renewing its lease."""
    rows = await conn.fetch(
        "SELECT id FROM theatre_move WHERE source = $1 AND step NOT IN ('done', 'aborted') "
        "AND (driver = '' OR updated_at < now() - make_interval(secs => $2)) ORDER BY id",
        region, LEASE_S)
    return [r["id"] for r in rows]


async def drive_unfinished(topology: Topology, region: str, ids: list[int], driver: str,
                           say: Callable[[str], None]) -> None:
    """The source region's worker: take over each journal of `ids` and finish it."""
    running, document = await epochs.current(topology)
    for move_id in ids:
        conn = await connect(running, region)
        try:
            row = await conn.fetchrow(CLAIM, move_id, driver, LEASE_S)
        finally:
            await conn.close()
        if row is None:
            continue
        record = _record(row)
        say(f"taking over the move of {record.theatre} {record.source} -> {record.target} "
            f"after step {record.step}")
        async with Mover(running, document, record, say, driver=driver) as mover:
            mover.start_heartbeat()
            await mover.finish()


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{table} {n}" for table, n in counts.items() if n) or "nothing"
