"""`bookcluster topology move THEATRE --to REGION`: move a theatre while it sells.

Each step is recorded in the source region's `theatre_move` row, so a mover
that dies is resumed (the same command again) or rolled back (`--rollback`):

0. **first copy**, while the theatre sells: the source exports its rows (show
   seats, bookings and their seats, payments, payment events, tickets,
   notifications, idempotency keys, pending outbox rows) as of one snapshot; the
   target imports them in a transaction it keeps open, so nobody sees them.
1. **freeze** (`frozen`): the source master's owner keys of the theatre's shows
   say "moving" (holds are refused before they publish anything); then, under
   the theatre's exclusive advisory lock, which waits for every write in flight
   (`bc_own` holds it shared), the source's record becomes FROZEN. Every later
   write answers 503 `theatre_moving`; reads go on.
2. **catch up and commit** (`committed`): what changed since the first copy's
   snapshot is exported and applied in the same target transaction, which then
   records the target as owner at epoch + 1 and commits. That commit is the
   move's decision: before it nothing of the copy is visible anywhere (an abort
   unfreezes the source; the target's transaction dies with it); after it the
   move only goes forward. A resumed move copies everything here instead.
3. The target master is rebuilt from the target's PostgreSQL: holds with their
   absolute expiry (so their remaining TTL), sales, blocked seats, at versions
   above the source's and the target's generation.
4. The topology at epoch + 1 (the theatre mapped to the target) is stored in
   every region.
5. **flip** (`flipped`): the source's record becomes MOVED (target, epoch + 1)
   and its owner keys say so. Writes go on at the target; a node that has not
   heard gets MOVED, adopts epoch + 1 from its own region's store and routes
   there. The freeze ends here.
6. Every node and worker is told to route by epoch + 1; topology.yaml is
   rewritten.
7. **clean up** (`done`): the source deletes the theatre's rows and seat state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from asyncpg.transaction import Transaction

from cluster import apply
from cluster import ownership as cluster_ownership
from cluster.topology_file import parse_stored, with_changes
from region_node import keys
from region_node.ownership import OWNED, Owner, shows_by_theatre
from region_node.reconciler import pg_wanted
from region_node.scripts import REPAIR
from router.registry import make_master
from router.topology import Topology

REDIS_TIMEOUT_S = 5.0
# The catch-up after the freeze takes rows changed since the first copy's snapshot, less
# this: longer than any write transaction (a write's deadline is 1.9 s), so one that
# began before the snapshot and committed after it is caught up too.
CATCH_UP_MARGIN = timedelta(seconds=10)
EXPORT = ("SELECT d, (SELECT jsonb_object_agg(key, jsonb_array_length(value)) "
          "FROM jsonb_each(d)) AS counts FROM bc_export_theatre($1::bigint[], $2) d")
IMPORT = "SELECT bc_import_theatre($1, $2::bigint[], $3::jsonb, $4)"
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


class Mover:
    def __init__(self, topology: Topology, document: str, record: MoveRecord,
                 progress: Callable[[str], None] = print, timeout_s: float = 10.0,
                 cluster_file: Topology | None = None) -> None:
        self.topology = topology  # as the cluster runs it (epoch from_epoch)
        self.document = document
        self.record = record
        self._progress = progress
        self.timeout_s = timeout_s
        self.cluster_file = cluster_file or topology  # the file to rewrite
        self.shows: list[int] = []
        self.frozen_at: float | None = None
        self.report: dict[str, Any] = dict(record.detail)
        # One session per region and one client per master, opened before the freeze:
        # a new PostgreSQL login costs tens of ms (SCRAM), and the freeze waits for none.
        self._pg: dict[str, asyncpg.Connection] = {}
        self._redis: dict[str, aioredis.Redis] = {}
        self._open: Transaction | None = None  # the target's, from the first copy on
        self._since: datetime | None = None  # the catch-up takes rows changed after it

    async def open(self) -> Mover:
        for region in self.topology.regions:
            self._pg[region] = await cluster_ownership.connect(self.topology, region)
            # Wherever the master is now (Sentinel may have promoted a replica).
            self._redis[region] = make_master(self.topology, region, near=region,
                                              timeout_s=REDIS_TIMEOUT_S)
        self.shows = (await shows_by_theatre(self._pg[self.record.source],
                                             [self.record.theatre])).get(self.record.theatre, [])
        return self

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
                self._pg[region] = await cluster_ownership.connect(self.topology, region)

    async def close(self) -> None:
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
            if await self._committed_at_target():
                self.progress("the copy had committed at the target; going on")
            else:
                await self._pause(pause_after, "frozen")
                await self._copy_and_commit()
            rec.step = "committed"
        if rec.step == "committed":
            await self._pause(pause_after, "committed")
            await self._rebuild_target()
            new_topology, new_document = self._next_topology()
            await apply.store(new_topology, rec.to_epoch, new_document, self._pg)
            self.progress(f"epoch {rec.to_epoch} stored in {len(new_topology.regions)} regions")
            await self._flip()
            rec.step = "flipped"
        if rec.step == "flipped":
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
                await conn.execute(
                    "UPDATE theatre_owner SET state = 'FROZEN', owner = $2, updated_at = now() "
                    "WHERE theatre_id = $1", rec.theatre, rec.target)
                rec.id = await conn.fetchval(
                    "INSERT INTO theatre_move (theatre_id, source, target, from_epoch, "
                    "to_epoch, step) VALUES ($1, $2, $3, $4, $5, 'frozen') RETURNING id",
                    rec.theatre, rec.source, rec.target, rec.from_epoch, rec.to_epoch)
        except (asyncpg.LockNotAvailableError, MoveFailed, asyncpg.PostgresError) as exc:
            await self._owner_keys(rec.source, owner.redis_value())
            raise MoveFailed(f"could not freeze {rec.theatre} ({exc}); nothing changed, it "
                             f"stays in {rec.source}") from None
        self.frozen_at = time.time()
        self.report["frozen_at"] = self.frozen_at
        self.progress(f"frozen in {time.monotonic() - began:.3f}s: new writes get 503 "
                      "theatre_moving, reads go on")

    async def precopy(self) -> None:
        """Before the freeze, while the theatre sells: the source exports its rows as of
        one snapshot and the target imports them in a transaction it keeps open, so
        nobody sees them. The frozen copy is then only what changed since."""
        rec = self.record
        src, dst = self._pg[rec.source], self._pg[rec.target]
        async with src.transaction(isolation="repeatable_read", readonly=True):
            as_of = await src.fetchval("SELECT now()")
            row = await src.fetchrow(EXPORT, self.shows, None)
        self._open = dst.transaction()
        await self._open.start()
        await dst.execute("SELECT bc_forget_theatre($1::bigint[])", self.shows)
        await dst.execute(IMPORT, rec.theatre, self.shows, row["d"], None)
        self._since = as_of - CATCH_UP_MARGIN
        self.report["rows"] = json.loads(row["counts"])
        self.progress(f"copied {sum(self.report['rows'].values())} rows to {rec.target} "
                      "while it sells, not committed: " + _counts(self.report["rows"]))

    async def abandon_precopy(self) -> None:
        if self._open is not None:
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError):
                await self._open.rollback()
            self._open = None

    async def _copy_and_commit(self) -> None:
        """Step 2, frozen: the source exports what changed since the first copy (or, with
        none made, everything), the target applies it and commits as owner."""
        rec = self.record
        src, dst = self._pg[rec.source], self._pg[rec.target]
        row = await src.fetchrow(EXPORT, self.shows, self._since)
        if self._open is None:  # resumed: nothing copied yet (or it was rolled back)
            self._open = dst.transaction()
            await self._open.start()
            await dst.execute("SELECT bc_forget_theatre($1::bigint[])", self.shows)
            self.report["rows"] = json.loads(row["counts"])
        await dst.execute(IMPORT, rec.theatre, self.shows, row["d"], rec.to_epoch)
        await self._open.commit()
        self._open = None
        caught_up = json.loads(row["counts"]) if self._since is not None else {}
        self.report["caught_up"] = caught_up
        await self._record_step("committed")
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
            await self._record_step("flipped")
        await self._owner_keys(rec.source, f"moved {rec.target} {rec.to_epoch}")
        freeze = self.report.get("freeze_s")
        self.progress(f"flipped: {rec.source} answers MOVED, {rec.target} takes the writes"
                      + (f"; writes were frozen for {freeze:.3f}s" if freeze is not None
                         else ""))

    async def _announce(self) -> None:
        """Step 6: every process routes by the new epoch; the file says so."""
        rec = self.record
        new_topology, new_document = self._next_topology()
        token = apply.operator_token(self.topology)
        reached = await apply.push(apply.processes(self.topology, new_topology),
                                   rec.to_epoch, token)
        late = [r for r in reached if r.epoch != rec.to_epoch]
        self.progress(f"epoch {rec.to_epoch} taken by {len(reached) - len(late)} of "
                      f"{len(reached)} processes")
        for r in late:  # the move stands: they get MOVED and catch up from their store
            self.progress(f"  {r.name} ({r.address}) did not take it yet: {r.error}")
        file_text = self.cluster_file.path.read_text()
        if file_text != new_document:
            edited = with_changes(file_text, rec.to_epoch, {rec.theatre: rec.target})
            self.cluster_file.path.write_text(edited)
        self.progress(f"{self.cluster_file.path} now maps {rec.theatre} to {rec.target} at "
                      f"epoch {rec.to_epoch}")

    async def _clean_source(self) -> None:
        """Step 7: the source forgets the theatre's rows and seat state."""
        rec = self.record
        conn = self._pg[rec.source]
        async with conn.transaction():
            deleted = await conn.fetchval("SELECT bc_forget_theatre($1::bigint[])", self.shows)
            await self._record_step("done")
        client = self._redis[rec.source]
        for show in self.shows:
            await client.delete(keys.show_holds(show), keys.show_booked(show),
                                keys.show_blocked(show))
        self.progress(f"{rec.source} cleaned up ({deleted} rows); done")

    async def rollback(self) -> None:
        """Undo a move that has not committed at its target: the source owns it again."""
        rec = self.record
        if rec.step != "frozen" or await self._committed_at_target():
            raise MoveFailed(f"the move of {rec.theatre} committed at {rec.target}; it can "
                             f"only go forward: `bookcluster topology move {rec.theatre} "
                             f"--to {rec.target}` (then move it back if you must)")
        conn = self._pg[rec.source]
        async with conn.transaction():
            epoch = await conn.fetchval(
                "UPDATE theatre_owner SET state = 'OWNED', owner = NULL, updated_at = now() "
                "WHERE theatre_id = $1 AND state = 'FROZEN' RETURNING epoch", rec.theatre)
            await self._record_step("aborted")
        if epoch is not None:
            await self._owner_keys(rec.source, str(epoch))
        self.progress(f"rolled back: {rec.theatre} is writable in {rec.source} again")

    # -- helpers ------------------------------------------------------------------

    async def _pause(self, pause_after: str | None, step: str) -> None:
        """Tests and drills: stop here, as a mover that crashed would (SIGKILL it)."""
        if pause_after == step:
            self.progress(f"paused after {step} (kill me, then resume or roll back)")
            await asyncio.Event().wait()

    async def _committed_at_target(self) -> bool:
        rec = self.record
        row = await self._pg[rec.target].fetchrow(
            "SELECT state, epoch FROM theatre_owner WHERE theatre_id = $1", rec.theatre)
        return row is not None and row["state"] == OWNED and row["epoch"] == rec.to_epoch

    async def _owner_keys(self, region: str, value: str) -> None:
        async with self._redis[region].pipeline(transaction=False) as pipe:
            for show in self.shows:
                pipe.set(keys.show_owner(show), value)
            await pipe.execute()

    async def _record_step(self, step: str) -> None:
        """On the source's session (inside its transaction when one is open)."""
        rec = self.record
        rec.step = step
        await self._pg[rec.source].execute(
            "UPDATE theatre_move SET step = $2, detail = $3::jsonb, updated_at = now() "
            "WHERE id = $1", rec.id, step, json.dumps(self.report, default=str))


async def unfinished(topology: Topology, theatre: str) -> MoveRecord | None:
    """The theatre's move that has not reached done or aborted, if any (in any region)."""
    for region in topology.regions:
        conn = await cluster_ownership.connect(topology, region)
        try:
            row = await conn.fetchrow(
                "SELECT * FROM theatre_move WHERE theatre_id = $1 "
                "AND step NOT IN ('done', 'aborted')", theatre)
        finally:
            await conn.close()
        if row is not None:
            return MoveRecord(row["id"], row["theatre_id"], row["source"], row["target"],
                              row["from_epoch"], row["to_epoch"], row["step"],
                              json.loads(row["detail"]))
    return None


async def move_command(topology: Topology, theatre: str, target: str | None, *,
                       dry_run: bool = False, rollback: bool = False, timeout_s: float = 10.0,
                       pause_after: str | None = None,
                       progress: Callable[[str], None] | None = None) -> int:
    """The CLI: start, resume or roll back a move. 0 done, raises MoveFailed otherwise."""
    say = progress or (lambda line: print(f"[move] {line}", flush=True))
    running, document = await apply.current(topology)
    record = await unfinished(running, theatre)
    if rollback:
        if record is None:
            raise MoveFailed(f"no unfinished move of {theatre} to roll back")
        async with Mover(running, document, record, say, timeout_s, topology) as mover:
            await mover.rollback()
        return 0
    if record is not None:
        if target is not None and target != record.target:
            raise MoveFailed(f"{theatre} is half way to {record.target} (step {record.step}): "
                             f"finish that move first, or `--rollback` it")
        say(f"resuming the move of {theatre} {record.source} -> {record.target} "
            f"(epoch {record.to_epoch}) after step {record.step}")
        async with Mover(running, document, record, say, timeout_s, topology) as mover:
            _summary(say, await mover.run(pause_after))
        return 0
    if target is None:
        raise MoveFailed("say where to: --to REGION")
    if target not in running.regions:
        raise MoveFailed(f"no region {target!r} in the running topology (epoch "
                         f"{running.epoch}): add it with `bookcluster topology apply` first")
    recorded = await cluster_ownership.recorded_owners(running)
    holders, owner = cluster_ownership.current_owner(recorded, theatre)
    if owner is None or owner.state != OWNED:
        raise MoveFailed(f"{theatre} has no single owner to move it from "
                         f"(records: {', '.join(holders) or 'none'})")
    source = holders[0]
    if source == target:
        raise MoveFailed(f"{theatre} already lives in {target}")
    record = MoveRecord(0, theatre, source, target, running.epoch, running.epoch + 1, "frozen")
    async with Mover(running, document, record, say, timeout_s, topology) as mover:
        if dry_run:
            say(f"would move {theatre} from {source} to {target} at epoch "
                f"{running.epoch + 1}: {len(mover.shows)} shows; nothing changed")
            return 0
        await mover.precopy()
        try:
            await mover.freeze(owner)
        except MoveFailed:
            await mover.abandon_precopy()
            raise
        await mover._pause(pause_after, "frozen")
        try:
            async with asyncio.timeout(timeout_s):
                await mover._copy_and_commit()
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError,
                aioredis.RedisError) as exc:
            mover._open = None  # rolled back with its session, which reconnect ends
            await mover.reconnect()  # the session the timeout cut off
            if await mover._committed_at_target():
                say(f"the copy committed before {type(exc).__name__}; going on")
            else:
                await mover.rollback()
                raise MoveFailed(f"move aborted ({type(exc).__name__}: {exc}); {theatre} "
                                 f"stays in {source}, nothing copied is visible") from None
        _summary(say, await mover.run(pause_after))
    return 0


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{table} {n}" for table, n in counts.items() if n) or "nothing"


def _summary(say: Callable[[str], None], report: dict[str, Any]) -> None:
    rows = report.get("rows", {})
    say(f"moved: {sum(rows.values())} rows, {report.get('holds', 0)} live holds; writes "
        f"frozen {report.get('freeze_s', '?')}s")
