"""Repairs a region's Redis seat mirror from PostgreSQL, the truth.

Runs in the region's worker, every second:
- if the master's run changed (`INFO server` run_id: a restart, or a
  promotion by Sentinel, through which the master is reached), it is a new
  **generation**: the next number of a PostgreSQL sequence. Every show of the
  region is repaired and its version raised to at least `gen << 32`, so no
  node ever sees a version go backwards; the RESET
  each repair publishes makes nodes drop their copy and read it again. The
  generation is logged with the master's address (`redis_master_log`): the
  operator page tells a promotion from a restart by it;
- if a replica of the master came online since the last pass (it reconnected,
  e.g. to a master that came back), every show is rewritten again: a change or
  RESET published while a replica was not streaming from its master never
  reaches the nodes subscribed on it, and they would keep a stale copy;
- every FULL_INTERVAL_S (and at the first pass), every show of the region is
  compared seat by seat: whatever diverged, for whatever reason, is repaired; and
  each show's layout (`layout.py`, what best-available chooses from) is compared
  by its digest and rewritten if missing or different;
- otherwise only the seats of bookings that changed since the last pass are
  compared (a hold, sale, release, expiry or extension writes its booking's
  `updated_at` in the same transaction as its seats'): a few rows per change,
  not every taken seat of every busy show.
The changes a pass looks for are those past its **watermark**: `updated_at` is
`now()` of the writing transaction, i.e. when it *started*, and it may commit
much later. So each pass first reads the start of the oldest transaction open
on the primary (`pg_stat_activity`, before its own reads; every session of the
application role is visible to it), and the next pass looks back to that (less
the settling window and a margin): a change committed after this pass's reads
started no earlier than it. A transaction open longer than the full interval
(an operator's tool) does not hold the window back: the next full pass sees
what it committed. A pass that fails keeps its watermark: the next one looks
back further.
`bookcluster repair` runs the same comparison on demand.

A seat held in Redis whose booking PostgreSQL does not know yet is a hold in
flight (Redis answers first) or an abandoned one (the sweeper ends it): it is
left alone. Seats PostgreSQL changed in the last second are left to the next
pass: their mirror change may be on its way.

Sales and releases keep happening while a pass runs, so the order matters:
Redis is read first and PostgreSQL after it, with the settling window widened
by the time in between: a change committed after the Redis read is then always
"settling" and never compared with a Redis state from before it. And the repair
script is a compare-and-set: a seat whose Redis state is no longer what the pass
read (a hold, sale or release landed meanwhile) is left to the next pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg
import redis.asyncio as aioredis
from redis.asyncio.sentinel import SentinelConnectionPool

from bookcluster.loops import Loop
from bookcluster.seats import keys
from bookcluster.seats import layout as seat_layout
from bookcluster.seats.home import HomeRegion
from bookcluster.seats.state import SeatState, read_seat_state, read_seats
from bookcluster.stores import ownership
from bookcluster.stores.connections import Connections
from bookcluster.stores.errors import REDIS_UNAVAILABLE
from bookcluster.topology.errors import RegionUnavailable

log = logging.getLogger(__name__)

INTERVAL_S = 1.0
FULL_INTERVAL_S = 30.0  # every show compared this often; between, only what changed
SETTLE = timedelta(seconds=1)  # younger PostgreSQL changes wait for the next pass
# Added to every look-back: clock granularity, and a transaction that had started but
# not yet shown its start in pg_stat_activity when the horizon was read.
MARGIN = timedelta(seconds=1)
# The start of the oldest transaction open on the primary (this statement's is one),
# as the primary's clock tells it now. NULL xact_start: idle sessions, or a role whose
# sessions we may not see (none of them writes bookings).
HORIZON = ("SELECT least(now(), min(xact_start)) AS oldest, now() AS now FROM pg_stat_activity "
           "WHERE datname = current_database()")
HOLD_SLACK_MS = 1000  # hold expiries closer than this agree
# Shows of theatres whose seats this region keeps (a subquery).
OWNED_SHOWS = ("SELECT sh.id FROM show sh JOIN screen sc ON sc.id = sh.screen_id "
               "JOIN theatre_owner o ON o.theatre_id = sc.theatre_id "
               "WHERE o.state IN ('OWNED', 'FROZEN')")


@dataclass
class RepairReport:
    shows_checked: int = 0
    divergent: dict[int, dict[str, str]] = field(default_factory=dict)  # show -> seat -> want
    generation: int | None = None  # set when this pass started a new generation
    layouts: list[int] = field(default_factory=list)  # shows whose layout was missing/wrong

    @property
    def divergent_seats(self) -> int:
        return sum(len(seats) for seats in self.divergent.values())


def pg_wanted(row: asyncpg.Record, now: float) -> str:
    """A show_seat row as the mirror should hold it (see the REPAIR script)."""
    if row["status"] == "UNAVAILABLE":
        return "U"
    if row["status"] == "BOOKED":
        return f"B:{row['booked_booking_id']}"
    expires = row["hold_expires_at"]
    if row["status"] == "LOCKED" and expires.timestamp() > now:
        return f"H:{row['hold_booking_id']}|{int(expires.timestamp() * 1000)}"
    return "A"


def redis_raw(state: SeatState, seat: str) -> str:
    """The seat as the REPAIR script reads it (an expired hold is still a hold)."""
    if seat in state.blocked:
        return "U"
    if seat in state.booked:
        return f"B:{state.booked[seat]}"
    hold = state.holds.get(seat)
    return f"H:{hold[0]}|{hold[1]}" if hold is not None else "A"


def redis_has(state: SeatState, seat: str, now_ms: int) -> str:
    if seat in state.blocked:
        return "U"
    if seat in state.booked:
        return f"B:{state.booked[seat]}"
    hold = state.holds.get(seat)
    if hold is not None and hold[1] > now_ms:
        return f"H:{hold[0]}|{hold[1]}"
    return "A"


def agree(want: str, have: str) -> bool:
    if want[0] == "H" and have[0] == "H":
        (w_booking, w_exp), (h_booking, h_exp) = (x[2:].split("|") for x in (want, have))
        return w_booking == h_booking and abs(int(w_exp) - int(h_exp)) <= HOLD_SLACK_MS
    return want == have


def diff(wanted: dict[str, str], state: SeatState, settling: set[str], known: set[str],
         now_ms: int) -> dict[str, str]:
    """The seats of one show whose Redis `state` disagrees with PostgreSQL's `wanted`
    (`pg_wanted`; a seat not in it is wanted "A"), each with what it should be. Left
    alone: `settling` seats (PostgreSQL changed them a moment ago) and a Redis hold of a
    booking PostgreSQL does not know (`known`): one in flight, or abandoned."""
    seats = set(wanted) | set(state.holds) | set(state.booked) | set(state.blocked)
    fix = {}
    for seat in seats - settling:
        want = wanted.get(seat, "A")
        have = redis_has(state, seat, now_ms)
        if agree(want, have):
            continue
        if want == "A" and have[0] == "H" and have[2:].split("|")[0] not in known:
            continue  # a hold in flight or abandoned: not PostgreSQL's yet
        fix[seat] = want
    return fix


async def master_address(master: aioredis.Redis) -> str:
    """Where `master` is now: as Sentinel names it, or the topology's address."""
    pool = master.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        host, port = await pool.get_master_address()
    else:
        host, port = pool.connection_kwargs["host"], pool.connection_kwargs["port"]
    return f"{host}:{port}"


class Reconciler:
    def __init__(self, connections: Connections, home: HomeRegion, region: str) -> None:
        self.connections = connections
        self.home = home
        self.region = region
        self.generation: int | None = None
        self.divergent_last = 0
        self.repaired_total = 0
        # Bookings changed after this (the primary's clock) are the next pass's to check;
        # None: the next pass compares every show.
        self.watermark: datetime | None = None
        self._full_at = 0.0  # monotonic clock of the last pass that compared every show
        self._online: set[str] | None = None  # replicas streaming at the last pass

    # -- passes ---------------------------------------------------------------

    async def run_once(self) -> RepairReport:
        """One pass: a new generation's full repair, every show now and then, or the
        seats that changed since the last pass."""
        # Read before any RESET we publish: a replica online now hears all of them.
        online = await self._online_replicas()
        joined = online - self._online if self._online is not None else set()
        horizon = await self._horizon()  # before this pass reads anything of PostgreSQL
        started = time.monotonic()
        since = self.watermark if started - self._full_at < FULL_INTERVAL_S else None
        report = await self._generation_pass()
        if report is None and joined:
            log.info("replica(s) %s of %s's master came online: every show sent again",
                     ", ".join(sorted(joined)), self.region)
            report = await self.repair(await self.region_shows(), rewrite=True)
        if report is None and since is not None:
            report = await self.repair_changed(since)
        else:
            if report is None:
                report = await self.repair(await self.region_shows())
            self._full_at = started
        # Settling seats of this pass changed after `horizon - SETTLE`: still in the window.
        self.watermark = horizon - SETTLE - MARGIN
        self._online = online
        self.divergent_last = report.divergent_seats
        return report

    async def _horizon(self) -> datetime:
        """What the next pass must look back to: the start of the oldest transaction open
        now, but no further than a full interval (a full pass covers what is older)."""
        async with self.home.connection(self.region) as conn:
            row = await conn.fetchrow(HORIZON)
        oldest: datetime = row["oldest"]
        now: datetime = row["now"]
        return max(oldest, now - timedelta(seconds=FULL_INTERVAL_S))

    async def _online_replicas(self) -> set[str]:
        """The master's replicas that receive its stream now (`ip:port`)."""
        info = await self.connections.redis_master(self.region).info("replication")
        return {f"{r['ip']}:{r['port']}" for name, r in info.items()
                if name.startswith("slave") and isinstance(r, dict)
                and r.get("state") == "online"}

    async def _round(self) -> None:
        await self.run_once()

    def loop(self) -> Loop:
        """A pass every INTERVAL_S; the stores not answering: skipped (backed off)."""
        return Loop("reconciler", self._round, INTERVAL_S,
                    expected=(RegionUnavailable, *REDIS_UNAVAILABLE))

    async def _generation_pass(self) -> RepairReport | None:
        master = self.connections.redis_master(self.region)
        run_id = (await master.info("server"))["run_id"]
        marker = await master.hgetall(keys.MIRROR_GENERATION)
        if marker.get("run_id") == run_id:
            self.generation = int(marker["gen"])
            return None
        address = await master_address(master)
        async with self.home.connection(self.region) as conn:
            # Logged with its number: the operator page's recent Redis failovers.
            generation = int(await conn.fetchval(
                "INSERT INTO redis_master_log (generation, master, run_id) "
                "VALUES (nextval('mirror_generation_seq'), $1, $2) RETURNING generation",
                address, run_id))
        await self.write_owner_keys()
        shows = await self.region_shows()
        report = await self.repair(shows, min_version=generation << keys.GENERATION_SHIFT,
                                   rewrite=True)
        await master.hset(keys.MIRROR_GENERATION, mapping={"gen": generation, "run_id": run_id})
        self.generation = report.generation = generation
        log.info("master of %s runs as generation %d (run %s): %d shows checked, %d seats "
                 "repaired", self.region, generation, run_id[:8], report.shows_checked,
                 report.divergent_seats)
        return report

    async def region_shows(self) -> list[int]:
        """The shows whose seats this region keeps: of theatres it owns (or is moving
        out; a theatre that moved away is its new home's to repair)."""
        async with self.home.connection(self.region) as conn:
            # One index probe per show, not a read of every seat row.
            return [r["id"] for r in await conn.fetch(
                "SELECT o.id FROM (" + OWNED_SHOWS + ") o WHERE EXISTS "
                "(SELECT 1 FROM show_seat ss WHERE ss.show_id = o.id) ORDER BY o.id")]

    async def write_owner_keys(self) -> int:
        """Put every show's owner key on the master from PostgreSQL (a new master
        generation starts empty). Returns how many shows it wrote."""
        async with self.home.connection(self.region) as conn:
            records = await ownership.owners(conn)
            shows = await ownership.shows_by_theatre(conn, records)
        master = self.connections.redis_master(self.region)
        async with master.pipeline(transaction=False) as pipe:
            for theatre, show_ids in shows.items():
                for show_id in show_ids:
                    pipe.set(keys.show_owner(show_id), records[theatre].redis_value())
            await pipe.execute()
        return sum(map(len, shows.values()))

    # -- comparing and repairing ----------------------------------------------

    async def repair(self, show_ids: list[int], min_version: int = 0, dry_run: bool = False,
                     rewrite: bool = False) -> RepairReport:
        """Compare these shows with PostgreSQL and fix what differs. With `rewrite`,
        every show is rewritten (a new version at least `min_version`, and a RESET
        that makes nodes read it again) even if nothing differs."""
        report = RepairReport(shows_checked=len(show_ids))
        master = self.connections.redis_master(self.region)
        for chunk in (show_ids[i:i + 200] for i in range(0, len(show_ids), 200)):
            redis_read = time.monotonic()  # Redis first: see the module's docstring
            states = {show: await read_seat_state(master, show) for show in chunk}
            # The bookings PostgreSQL knows, before its seats are read: a hold committed
            # after the seat read but before this one would otherwise be known while
            # its seats read AVAILABLE, and its Redis hold would be "repaired" away.
            known = await self._known_bookings(states.values())
            wanted, settling = await self._pg_state(
                chunk, SETTLE + timedelta(seconds=time.monotonic() - redis_read))
            await self._fix(states, known, wanted, settling, report, min_version, dry_run,
                            rewrite)
            # The layout best-available chooses from: missing on a new master, or wrong.
            async with self.home.connection(self.region) as conn:
                report.layouts += await seat_layout.repair(conn, master, chunk, dry_run)
        return report

    async def repair_changed(self, since: datetime) -> RepairReport:
        """Compare the seats of the bookings that changed after `since` (of shows this
        region keeps) with PostgreSQL, and fix what differs."""
        async with self.home.connection(self.region) as conn:
            # MATERIALIZED: the window is read by `booking_by_update`, never by walking
            # every booking of every owned show (a plan seen with a wide window).
            rows = await conn.fetch(
                "WITH b AS MATERIALIZED (SELECT id, show_id FROM booking WHERE updated_at > $1) "
                "SELECT DISTINCT bs.show_id, bs.seat_id FROM b "
                "JOIN booking_seat bs ON bs.booking_id = b.id "
                "WHERE b.show_id IN (" + OWNED_SHOWS + ")", since)
        seats: dict[int, list[str]] = {}
        for row in rows:
            seats.setdefault(row["show_id"], []).append(row["seat_id"])
        report = RepairReport(shows_checked=len(seats))
        if not seats:
            return report
        master = self.connections.redis_master(self.region)
        redis_read = time.monotonic()  # Redis first, as in `repair`
        states = {show: await read_seats(master, show, sorted(ids))
                  for show, ids in seats.items()}
        known = await self._known_bookings(states.values())  # before the seats: see `repair`
        wanted, settling = await self._pg_seats(
            seats, SETTLE + timedelta(seconds=time.monotonic() - redis_read))
        await self._fix(states, known, wanted, settling, report)
        return report

    async def _fix(self, states: dict[int, SeatState], known: set[str],
                   wanted: dict[int, dict[str, str]], settling: dict[int, set[str]],
                   report: RepairReport, min_version: int = 0, dry_run: bool = False,
                   rewrite: bool = False) -> None:
        """Repair each show whose Redis `states` differ from what PostgreSQL `wanted`
        (`known`: the bookings PostgreSQL knew, read before `wanted`)."""
        now_ms = int(time.time() * 1000)
        repaired = 0
        for show, state in states.items():
            fix = diff(wanted.get(show, {}), state, settling.get(show, set()), known, now_ms)
            if fix:
                report.divergent[show] = fix
            if not dry_run and (fix or rewrite):
                args = [min_version] + [x for seat in sorted(fix) for x in (
                    seat, redis_raw(state, seat), fix[seat])]
                _, changed = await self.home.script(self.region, "repair", show, args)
                repaired += int(changed)
        self.repaired_total += repaired

    async def _pg_state(self, shows: list[int], settle: timedelta
                        ) -> tuple[dict[int, dict[str, str]], dict[int, set[str]]]:
        """What PostgreSQL wants for these shows' seats, and the seats it changed within
        `settle` (whose mirror change may not have reached Redis yet)."""
        async with self.home.connection(self.region) as conn:
            rows = await conn.fetch(
                "SELECT show_id, seat_id, status, hold_booking_id, hold_expires_at, "
                "booked_booking_id, updated_at > now() - $2::interval AS settling "
                "FROM show_seat WHERE show_id = ANY($1::bigint[]) "
                "AND (status <> 'AVAILABLE' OR updated_at > now() - $2::interval)",
                shows, settle)
        return _wanted(rows)

    async def _pg_seats(self, seats: dict[int, list[str]], settle: timedelta
                        ) -> tuple[dict[int, dict[str, str]], dict[int, set[str]]]:
        """`_pg_state` for these seats only (show -> seat ids)."""
        pairs = [(show, seat) for show, ids in seats.items() for seat in ids]
        async with self.home.connection(self.region) as conn:
            rows = await conn.fetch(
                # One primary-key probe per seat: LIMIT 1 (the key is unique) keeps the
                # planner from a hash join over a scan of every show_seat row.
                "SELECT ss.* FROM unnest($1::bigint[], $2::text[]) AS k (show_id, seat_id) "
                "CROSS JOIN LATERAL (SELECT show_id, seat_id, status, hold_booking_id, "
                "hold_expires_at, booked_booking_id, "
                "updated_at > now() - $3::interval AS settling FROM show_seat "
                "WHERE show_id = k.show_id AND seat_id = k.seat_id LIMIT 1) ss",
                [show for show, _ in pairs], [seat for _, seat in pairs], settle)
        return _wanted(rows)

    async def _known_bookings(self, states: Iterable[SeatState]) -> set[str]:
        """Bookings PostgreSQL knows among those Redis holds seats for."""
        held = sorted({b for s in states for b, _ in s.holds.values()})
        if not held:
            return set()
        async with self.home.connection(self.region) as conn:
            return {r["id"] for r in await conn.fetch(
                "SELECT id FROM booking WHERE id = ANY($1::text[])", held)}


def _wanted(rows: Iterable[asyncpg.Record]
            ) -> tuple[dict[int, dict[str, str]], dict[int, set[str]]]:
    """show_seat rows (with `settling`) -> (show -> seat -> wanted, show -> settling seats)."""
    now = time.time()
    wanted: dict[int, dict[str, str]] = {}
    settling: dict[int, set[str]] = {}
    for row in rows:
        wanted.setdefault(row["show_id"], {})[row["seat_id"]] = pg_wanted(row, now)
        if row["settling"]:
            settling.setdefault(row["show_id"], set()).add(row["seat_id"])
    return wanted, settling
