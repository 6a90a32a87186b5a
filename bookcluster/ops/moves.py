"""`bookcluster topology move THEATRE --to REGION`: start, resume or roll back a move.

The move itself (its journal, the steps, the outcome at the target, the lease a
driver renews) is `bookcluster/worker/moves.py`: the source region's worker drives
a journal its mover left to its end with the same machinery.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from bookcluster.ops import ownership as cluster_ownership
from bookcluster.stores.ownership import OWNED
from bookcluster.topology.model import Topology
from bookcluster.worker import epochs
from bookcluster.worker.moves import (
    LEASE_S,
    NOT_COMMITTED,
    PENDING,
    MoveFailed,
    Mover,
    MoveRecord,
    claim,
    driver_name,
    journal,
    unfinished,
)

__all__ = ["MoveFailed", "move_command"]


async def move_command(topology: Topology, theatre: str, target: str | None, *,
                       dry_run: bool = False, rollback: bool = False, timeout_s: float = 10.0,
                       pause_after: str | None = None,
                       progress: Callable[[str], None] | None = None) -> int:
    """The CLI: start, resume or roll back a move. 0 done, raises MoveFailed otherwise."""
    say = progress or (lambda line: print(f"[move] {line}", flush=True))
    running, document = await epochs.current(topology)
    record = await unfinished(running, theatre)
    if rollback or record is not None:
        if record is None:
            raise MoveFailed(f"no unfinished move of {theatre} to roll back")
        if not rollback and target is not None and target != record.target:
            raise MoveFailed(f"{theatre} is half way to {record.target} (step {record.step}): "
                             f"finish that move first, or `--rollback` it")
        return await _take_over(running, document, record, say, timeout_s, topology,
                                rollback=rollback, pause_after=pause_after)
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
        await mover.pause(pause_after, "frozen")
        try:
            async with asyncio.timeout(timeout_s):
                await mover.copy_and_commit()
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError,
                aioredis.RedisError) as exc:
            # The commit's answer may be lost, not its outcome: learn it, never guess.
            mover.lose_target_transaction()
            with contextlib.suppress(OSError, TimeoutError, asyncpg.PostgresError,
                                     asyncpg.InterfaceError):
                await mover.reconnect()  # what it had not committed (resolve reconnects)
            outcome = await mover.resolve(fence=True)
            if outcome == PENDING:
                raise mover.pending() from None
            if outcome == NOT_COMMITTED:
                await mover.unfreeze()
                raise MoveFailed(f"move aborted ({type(exc).__name__}: {exc}); {theatre} "
                                 f"stays in {source}, nothing copied is visible") from None
            say(f"the copy committed before {type(exc).__name__}; going on")
            await mover.record_step("committed")
        await _finish(mover, pause_after, say)
    return 0


async def _take_over(running: Topology, document: str, record: MoveRecord,
                     say: Callable[[str], None], timeout_s: float, cluster_file: Topology,
                     *, rollback: bool, pause_after: str | None) -> int:
    """`--rollback`, or the same command again: drive an unfinished move once its driver
    (a mover that died, or the worker) let go of it."""
    driver = driver_name("mover")
    claimed = await claim(running, record, driver, wait_s=LEASE_S + 1)
    if claimed is None:
        now = await journal(running, record)
        if now.step == ("aborted" if rollback else "done"):  # the worker was first
            say(f"{now.driver} already {'rolled back' if rollback else 'finished'} the move "
                f"of {now.theatre}")
            return 0
        raise MoveFailed(f"the move of {record.theatre} is being driven by {now.driver} "
                         f"(step {now.step}); it finishes by itself, watch "
                         "`bookcluster status` or retry in a few seconds")
    async with Mover(running, document, claimed, say, timeout_s, cluster_file,
                     driver=driver) as mover:
        mover.start_heartbeat()
        if rollback:
            await mover.rollback()
            return 0
        say(f"resuming the move of {claimed.theatre} {claimed.source} -> {claimed.target} "
            f"(epoch {claimed.to_epoch}) after step {claimed.step}")
        await _finish(mover, pause_after, say)
    return 0


async def _finish(mover: Mover, pause_after: str | None, say: Callable[[str], None]) -> None:
    rec = mover.record
    try:
        report = await mover.run(pause_after)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError,
            aioredis.RedisError) as exc:
        raise MoveFailed(f"the move of {rec.theatre} stopped after step {rec.step} "
                         f"({type(exc).__name__}: {exc}); {rec.source}'s worker finishes it "
                         f"within seconds of the stores answering again") from None
    _summary(say, report)


def _summary(say: Callable[[str], None], report: dict[str, Any]) -> None:
    rows = report.get("rows", {})
    say(f"moved: {sum(rows.values())} rows, {report.get('holds', 0)} live holds; writes "
        f"frozen {report.get('freeze_s', '?')}s")
