"""Audit: prove the cluster's invariants (ARCHITECTURE.md) after a run, in every region.

Reads each region's PostgreSQL primary (one REPEATABLE READ snapshot) and
Redis master, and every node's seat cache (`GET /ops/seat-cache`). Run it on a
quiescent cluster: a write in flight shows up as a transient Redis/PostgreSQL
disagreement. Violations, by check:

1. No seat sold twice (invariant 1, no double booking)
   `sold_twice`      two sold booking_seat rows for one (show, seat), in one region or
                     in two (a theatre's sales copied without a move, or seeded afresh);
   `wrong_region`    bookings of a show stored in a region that does not own its
                     theatre (`theatre_owner`), where no home lock or unique index
                     could guard them.
1b. Every theatre has one home (theatre ownership, fenced by epochs)
   `ownership`       a catalog theatre owned (OWNED, or FROZEN: moving out) by no region
                     or by two, owned since an epoch newer than the cluster's (the
                     newest applied topology), or placed by that topology elsewhere
                     than its owner; an unfinished move is named.
2. Every sale is whole (invariants 1 and 2, no double booking, no lost confirmation)
   `booked_seat`     a BOOKED show_seat whose booking is not a CONFIRMED booking of
                     the show with a sold booking_seat row for that seat;
   `sold_seat`       a sold booking_seat row whose show_seat is not BOOKED by it;
   `unsold_seat`     a CONFIRMED booking with a seat row not sold (or no seats).
3. Holds end (invariant 6, holds are leases)
   `stale_hold`      an INITIATED booking past expires_at + sweep interval + grace.
3b. Money is conserved (invariant 3)
   `money`           a captured (or recorded) payment that is neither the payment of its
                     CONFIRMED booking nor on its way back (REFUND_PENDING/REFUNDED);
   `unpaid_sale`     a CONFIRMED booking whose payment (booking.payment_id) is not a
                     CAPTURED payment row of this booking for exactly its amount: missing,
                     RECORDED (never verified with the gateway), being refunded, or of
                     another amount;
   `webhook_pending` a payment event stored but not processed after the grace period.
3c. At the door (check-in: a ticket goes in once)
   `door_admission_unsold` a scan that admitted a ticket whose booking is not CONFIRMED;
   `door_admitted_twice` a ticket admitted again without an exit between (an offline gate's
                     double entry is recorded as `entered_twice` and reported at upload);
   `refund_after_entry` a booking whose ticket went in at the door (admitted, or an
                     offline double entry) and whose sale's payment is being or was
                     refunded (a refund is refused after entry; a refunded ticket is
                     refused at the door).
4. Redis agrees with PostgreSQL (holds in Redis only save work; PostgreSQL decides)
   `redis_booked`    the `booked` hash differs from PostgreSQL's BOOKED seats;
   `redis_hold`      a live Redis hold without a PostgreSQL LOCKED row of its booking;
   `pg_hold`         a PostgreSQL hold still running without its live Redis hold;
   `redis_blocked`   the `blocked` set differs from PostgreSQL's UNAVAILABLE seats.
5. Every node's cache agrees with PostgreSQL (seat maps are derived state; `node_audit.py`)
   `node_cache`      a node's cached seat map shows a seat otherwise than PostgreSQL
                     (read now, not from the snapshot: caches are live), still after
                     ~1.6 s of looking again; names the node, the show's version and
                     mirror generation. Region = the show's home region.
6. On-sales followed their queue (`onsale_audit.py`)
   `unadmitted_hold` a hold of a show under an on-sale made without an admission pass;
   `admission_order` a pass used by a user the queue had not reached, or a frontier
                     that went back;
   `admitted_twice`  a user with a second hold under one on-sale while their pass's ran.
A node that does not answer its cache (or a node check that cannot get an operator
token) is listed with the unreachable regions.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import asyncpg
import redis.asyncio as aioredis

from bookcluster.node.overview import audit_report_path
from bookcluster.ops.node_audit import CacheDiff, audit_node_caches
from bookcluster.ops.onsale_audit import onsale_findings
from bookcluster.seats import keys
from bookcluster.seats.state import parse_hold
from bookcluster.stores.connections import PG_TOOL_SESSION, connect_primary, make_master
from bookcluster.topology.errors import TopologyError
from bookcluster.topology.load import parse_topology
from bookcluster.topology.model import Topology
from bookcluster.topology.placement import Placement

BOOKING_STATUSES = ("INITIATED", "CONFIRMED", "CANCELLED", "EXPIRED")
SEAT_STATUSES = ("AVAILABLE", "LOCKED", "BOOKED", "UNAVAILABLE")
DEFAULT_GRACE_S = 5.0
# Holds ending this close to "now" are not judged: the TTL, sweeper and the
# two clocks (Redis TIME, PostgreSQL now()) may disagree about them.
CLOCK_SLACK_MS = 1000
PG_CONNECT_TIMEOUT_S = 5.0
PG_COMMAND_TIMEOUT_S = 60.0
REDIS_TIMEOUT_S = 10.0
LISTED = 50
UNREACHABLE = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
               asyncpg.CannotConnectNowError, aioredis.ConnectionError, aioredis.TimeoutError)


@dataclass(frozen=True)
class Violation:
    check: str
    region: str
    show_id: int | None
    seat_id: str | None
    detail: str


@dataclass(frozen=True)
class RegionCounts:
    bookings: dict[str, int]
    seats: dict[str, int]
    shows_checked: int


@dataclass
class AuditReport:
    regions: dict[str, RegionCounts] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    # region, or "node <name>", -> what failed
    unreachable: dict[str, str] = field(default_factory=dict)
    node_caches: dict[str, int] = field(default_factory=dict)  # node -> cached shows checked

    @property
    def exit_code(self) -> int:
        """0 clean, 1 a violation, 2 a region or node could not be audited."""
        return 2 if self.unreachable else 1 if self.violations else 0

    def as_dict(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, **asdict(self)}


class RegionUnreachable(Exception):
    """A region's PostgreSQL primary or Redis master did not answer; says which."""


# -- PostgreSQL ---------------------------------------------------------------

SOLD_TWICE = """
SELECT show_id, seat_id, array_agg(booking_id ORDER BY booking_id) AS bookings
FROM booking_seat WHERE sold GROUP BY show_id, seat_id HAVING count(*) > 1 ORDER BY 1, 2"""
BOOKINGS_BY_THEATRE = """
SELECT b.show_id, sc.theatre_id, count(*) AS n FROM booking b
JOIN show s ON s.id = b.show_id JOIN screen sc ON sc.id = s.screen_id
WHERE NOT EXISTS (SELECT 1 FROM theatre_owner o WHERE o.theatre_id = sc.theatre_id
                  AND o.state IN ('OWNED', 'FROZEN'))
GROUP BY b.show_id, sc.theatre_id ORDER BY 1"""
SOLD = "SELECT show_id, seat_id, booking_id FROM booking_seat WHERE sold"
OWNERS = "SELECT theatre_id, state, epoch, owner FROM theatre_owner"
UNFINISHED_MOVES = """
SELECT theatre_id, source, target, step FROM theatre_move WHERE step NOT IN ('done', 'aborted')"""
BAD_BOOKED = """
SELECT * FROM (SELECT ss.show_id, ss.seat_id, ss.booked_booking_id AS booking, CASE
    WHEN b.id IS NULL THEN 'no such booking'
    WHEN b.status <> 'CONFIRMED' THEN 'booking is ' || b.status
    WHEN b.show_id <> ss.show_id THEN 'booking is of show ' || b.show_id
    WHEN bs.booking_id IS NULL THEN 'no booking_seat row'
    WHEN NOT bs.sold THEN 'its booking_seat row is not sold'
    WHEN bs.show_id <> ss.show_id THEN 'its booking_seat row is of show ' || bs.show_id END
  AS problem FROM show_seat ss
  LEFT JOIN booking b ON b.id = ss.booked_booking_id
  LEFT JOIN booking_seat bs ON bs.booking_id = ss.booked_booking_id AND bs.seat_id = ss.seat_id
  WHERE ss.status = 'BOOKED') bad WHERE problem IS NOT NULL ORDER BY 1, 2"""
BAD_SOLD = """
SELECT bs.show_id, bs.seat_id, bs.booking_id, ss.status, ss.booked_booking_id
FROM booking_seat bs LEFT JOIN show_seat ss ON ss.show_id = bs.show_id AND ss.seat_id = bs.seat_id
WHERE bs.sold AND (ss.status IS DISTINCT FROM 'BOOKED'
                   OR ss.booked_booking_id IS DISTINCT FROM bs.booking_id)
ORDER BY 1, 2"""
UNSOLD_CONFIRMED = """
SELECT b.id, b.show_id, bs.seat_id FROM booking b
LEFT JOIN booking_seat bs ON bs.booking_id = b.id
WHERE b.status = 'CONFIRMED' AND bs.sold IS NOT TRUE ORDER BY 2, 1, 3"""
STALE = """
SELECT id, show_id, extract(epoch FROM now() - expires_at)::float8 AS overdue_s FROM booking
WHERE status = 'INITIATED' AND expires_at < now() - $1::interval ORDER BY expires_at"""
SEAT_ROWS = """
SELECT show_id, seat_id, status, coalesce(hold_booking_id, booked_booking_id) AS booking,
       (extract(epoch FROM hold_expires_at) * 1000)::bigint AS expires_ms
FROM show_seat WHERE status <> 'AVAILABLE'"""


@dataclass
class _Show:
    """One show's seat state, from either side, in the same shape."""
    booked: dict[str, str] = field(default_factory=dict)  # seat -> booking
    holds: dict[str, tuple[str, int]] = field(default_factory=dict)  # seat -> (booking, ms)
    blocked: set[str] = field(default_factory=set)
    malformed: dict[str, str] = field(default_factory=dict)  # Redis hold values we can't parse


async def _counts(conn: asyncpg.Connection, table: str,
                  statuses: tuple[str, ...]) -> dict[str, int]:
    rows = await conn.fetch(f"SELECT status, count(*) AS n FROM {table} GROUP BY status")
    return {**dict.fromkeys(statuses, 0), **{r["status"]: r["n"] for r in rows}}


async def _double_sales(conn: asyncpg.Connection, region: str) -> list[Violation]:
    return [Violation("sold_twice", region, r["show_id"], r["seat_id"],
                      f"sold to {', '.join(r['bookings'])}")
            for r in await conn.fetch(SOLD_TWICE)]


@dataclass
class _Ownership:
    """What one region's store says about homes, for the checks across regions."""
    owners: dict[str, tuple[str, int, str | None]] = field(default_factory=dict)
    sold: dict[tuple[int, str], str] = field(default_factory=dict)  # (show, seat) -> booking
    theatres: list[str] = field(default_factory=list)
    epoch: int = 0  # the newest topology applied to this region
    document: str | None = None
    moves: list[str] = field(default_factory=list)
    # Bookings of theatres this region does not own: (show, theatre, how many).
    strays: list[tuple[int, str, int]] = field(default_factory=list)


async def _ownership(conn: asyncpg.Connection) -> _Ownership:
    found = _Ownership()
    found.strays = [(r["show_id"], r["theatre_id"], r["n"])
                    for r in await conn.fetch(BOOKINGS_BY_THEATRE)]
    found.owners = {r["theatre_id"]: (r["state"], r["epoch"], r["owner"])
                    for r in await conn.fetch(OWNERS)}
    found.sold = {(r["show_id"], r["seat_id"]): r["booking_id"] for r in await conn.fetch(SOLD)}
    found.theatres = [r["id"] for r in await conn.fetch("SELECT id FROM theatre")]
    row = await conn.fetchrow("SELECT epoch, document FROM cluster_topology "
                              "ORDER BY epoch DESC LIMIT 1")
    if row is not None:
        found.epoch, found.document = row["epoch"], row["document"]
    found.moves = [f"{r['theatre_id']} {r['source']} -> {r['target']} stopped after "
                   f"{r['step']}" for r in await conn.fetch(UNFINISHED_MOVES)]
    return found


def _across_regions(topology: Topology, found: dict[str, _Ownership]) -> list[Violation]:
    """No seat sold in two regions; every theatre owned by exactly one region, at an
    epoch no newer than the cluster's, where the applied topology places it."""
    out = []
    sold_in: dict[tuple[int, str], list[str]] = {}
    for region, own in found.items():
        for key, booking in own.sold.items():
            sold_in.setdefault(key, []).append(f"{booking} in {region}")
    out += [Violation("sold_twice", "*", show, seat, "sold in two regions: " + ", ".join(b))
            for (show, seat), b in sorted(sold_in.items()) if len(b) > 1]
    if not found:
        return out
    epoch = max(own.epoch for own in found.values())
    document = next((own.document for own in found.values()
                     if own.epoch == epoch and own.document), None)
    placement = Placement(topology)
    if document is not None and epoch != topology.epoch:
        try:
            placement = Placement(parse_topology(document, topology.path,
                                                 topology.settings.run_dir))
        except TopologyError as exc:
            out.append(Violation("ownership", "*", None, None, f"applied epoch {epoch} "
                                 f"does not parse: {exc}"))
    theatres = sorted({t for own in found.values() for t in own.theatres})
    moving = {m.split()[0]: m for own in found.values() for m in own.moves}
    homes = {t: [r for r, own in found.items()
                 if own.owners.get(t, ("",))[0] in ("OWNED", "FROZEN")] for t in theatres}
    out += [Violation("wrong_region", region, show, None,
                      f"{n} booking(s) of theatre {theatre}, which {region} does not own, "
                      f"whose home is {' and '.join(homes.get(theatre, [])) or 'nowhere'}")
            for region, own in found.items() for show, theatre, n in own.strays]
    for theatre in theatres:
        holders = {region: own.owners[theatre] for region, own in found.items()
                   if own.owners.get(theatre, ("",))[0] in ("OWNED", "FROZEN")}
        note = f" (move {moving[theatre]})" if theatre in moving else ""
        if len(holders) != 1:
            out.append(Violation("ownership", "*", None, None, f"theatre {theatre} is owned "
                                 f"by {len(holders)} regions: {', '.join(holders) or 'none'}"
                                 + note))
            continue
        (region, (state, since, _)), = holders.items()
        if since > epoch:
            out.append(Violation("ownership", region, None, None, f"theatre {theatre} owned "
                                 f"since epoch {since}, newer than the cluster's {epoch}"))
        placed = placement.region_of(theatre)
        if placed != region and state == "OWNED":
            out.append(Violation("ownership", region, None, None, f"theatre {theatre}: the "
                                 f"topology at epoch {epoch} places it in {placed}, but "
                                 f"{region} owns it" + note))
        elif state == "FROZEN":
            out.append(Violation("ownership", region, None, None, f"theatre {theatre} is "
                                 f"frozen in {region}{note}: resume or roll back the move"))
    return out


async def _sales(conn: asyncpg.Connection, region: str) -> list[Violation]:
    out = [Violation("booked_seat", region, r["show_id"], r["seat_id"],
                     f"BOOKED by {r['booking']}: {r['problem']}")
           for r in await conn.fetch(BAD_BOOKED)]
    out += [Violation("sold_seat", region, r["show_id"], r["seat_id"],
                      f"sold to {r['booking_id']} but show_seat is "
                      f"{r['status'] or 'missing'} ({r['booked_booking_id'] or 'no booking'})")
            for r in await conn.fetch(BAD_SOLD)]
    out += [Violation("unsold_seat", region, r["show_id"], r["seat_id"],
                      f"CONFIRMED booking {r['id']} "
                      + ("has no seats" if r["seat_id"] is None else "has this seat unsold"))
            for r in await conn.fetch(UNSOLD_CONFIRMED)]
    return out


MONEY = """
SELECT p.id, p.booking_id, p.status, b.status AS booking_status, b.payment_id
FROM payment p LEFT JOIN booking b ON b.id = p.booking_id
WHERE p.status IN ('CAPTURED', 'RECORDED')
  AND (b.status IS DISTINCT FROM 'CONFIRMED' OR b.payment_id IS DISTINCT FROM p.id)
"""
# The other direction: a sale stands only on a capture of exactly its amount (a sale
# paid by a payment being refunded is found here too).
UNPAID_SALES = """
SELECT b.id, b.show_id, b.amount_paise, b.payment_id, p.status, p.amount_paise AS paid,
       p.booking_id AS paid_for
FROM booking b LEFT JOIN payment p ON p.id = b.payment_id
WHERE b.status = 'CONFIRMED'
  AND (p.id IS NULL OR p.status <> 'CAPTURED' OR p.amount_paise <> b.amount_paise
       OR p.booking_id <> b.id)
ORDER BY b.show_id, b.id
"""
# At the door (`booking/checkin.py`): an admission stands only on a confirmed sale, and a
# ticket is admitted again only after it went out (an offline double is `entered_twice`,
# reported at upload, never counted as an admission).
ADMITTED_UNSOLD = """
SELECT c.booking_id, c.show_id, c.gate, c.scanned_at, b.status
FROM checkin_scan c LEFT JOIN booking b ON b.id = c.booking_id
WHERE c.outcome = 'admitted' AND b.status IS DISTINCT FROM 'CONFIRMED'
ORDER BY c.show_id, c.id
"""
ADMITTED_TWICE = """
SELECT booking_id, show_id, gate, scanned_at, before_gate FROM (
    SELECT c.booking_id, c.show_id, c.gate, c.scanned_at, c.outcome,
           lag(c.outcome) OVER w AS before, lag(c.gate) OVER w AS before_gate
    FROM checkin_scan c WHERE c.outcome IN ('admitted', 'exited')
    WINDOW w AS (PARTITION BY c.booking_id ORDER BY c.id)) s
WHERE outcome = 'admitted' AND before = 'admitted'
ORDER BY show_id, booking_id
"""
REFUNDED_ADMITTED = """
SELECT DISTINCT ON (c.booking_id) c.booking_id, c.show_id, c.gate, c.scanned_at,
       p.id AS payment_id, p.status
FROM checkin_scan c JOIN booking b ON b.id = c.booking_id
JOIN payment p ON p.id = b.payment_id
WHERE c.outcome IN ('admitted', 'entered_twice') AND p.status IN ('REFUND_PENDING', 'REFUNDED')
ORDER BY c.booking_id, c.id
"""
PENDING_EVENTS = """
SELECT event_id, booking_id, extract(epoch FROM now() - received_at) AS age_s
FROM payment_event WHERE processed_at IS NULL AND received_at < now() - $1::interval
"""


async def _admissions(conn: asyncpg.Connection, region: str) -> list[Violation]:
    out = [Violation("door_admission_unsold", region, r["show_id"], None,
                     f"{r['booking_id']} admitted at {r['gate']} ({r['scanned_at']}) but its "
                     f"booking is {r['status'] or 'missing'}")
           for r in await conn.fetch(ADMITTED_UNSOLD)]
    out += [Violation("door_admitted_twice", region, r["show_id"], None,
                      f"{r['booking_id']} admitted at {r['gate']} ({r['scanned_at']}) while "
                      f"inside since {r['before_gate']}")
            for r in await conn.fetch(ADMITTED_TWICE)]
    out += [Violation("refund_after_entry", region, r["show_id"], None,
                      f"{r['booking_id']} went in at {r['gate']} ({r['scanned_at']}) but its "
                      f"payment {r['payment_id']} is {r['status']}")
            for r in await conn.fetch(REFUNDED_ADMITTED)]
    return out


async def _money(conn: asyncpg.Connection, region: str, grace_s: float) -> list[Violation]:
    out = [Violation("money", region, None, None,
                     f"payment {r['id']} is {r['status']} but booking {r['booking_id']} is "
                     f"{r['booking_status'] or 'missing'} (paid by {r['payment_id']})")
           for r in await conn.fetch(MONEY)]
    out += [Violation("unpaid_sale", region, r["show_id"], None, _unpaid(r))
            for r in await conn.fetch(UNPAID_SALES)]
    out += [Violation("webhook_pending", region, None, None,
                      f"payment event {r['event_id']} for {r['booking_id']} unprocessed "
                      f"for {r['age_s']:.0f}s")
            for r in await conn.fetch(PENDING_EVENTS, timedelta(seconds=grace_s))]
    return out


def _unpaid(row: asyncpg.Record) -> str:
    sale = f"CONFIRMED booking {row['id']} ({row['amount_paise']} paise)"
    if row["payment_id"] is None:
        return f"{sale} has no payment id"
    if row["status"] is None:
        return f"{sale} names payment {row['payment_id']}, which has no payment row"
    paid = f"{sale} is paid by {row['payment_id']}: {row['status']}, {row['paid']} paise"
    return paid if row["paid_for"] == row["id"] else f"{paid}, for booking {row['paid_for']}"


async def _stale_holds(conn: asyncpg.Connection, region: str, max_age_s: float) -> list[Violation]:
    return [Violation("stale_hold", region, r["show_id"], None,
                      f"booking {r['id']} still INITIATED {r['overdue_s']:.1f}s after its hold "
                      f"ended (allowed {max_age_s:g}s)")
            for r in await conn.fetch(STALE, timedelta(seconds=max_age_s))]


async def _pg_shows(conn: asyncpg.Connection) -> dict[int, _Show]:
    shows: dict[int, _Show] = defaultdict(_Show)
    for r in await conn.fetch(SEAT_ROWS):
        show = shows[r["show_id"]]
        if r["status"] == "BOOKED":
            show.booked[r["seat_id"]] = r["booking"]
        elif r["status"] == "LOCKED":
            show.holds[r["seat_id"]] = (r["booking"], r["expires_ms"])
        else:
            show.blocked.add(r["seat_id"])
    return shows


# -- Redis --------------------------------------------------------------------

async def _redis_shows(client: aioredis.Redis) -> tuple[int, dict[int, _Show]]:
    """The master's clock in ms, and the seat state of every show with a key."""
    seconds, micros = await client.time()
    found: list[tuple[str, int]] = []
    for kind in ("holds", "booked", "blocked"):
        async for key in client.scan_iter(match=f"{{show:*}}:{kind}", count=1000):
            tag = key.partition("}")[0].removeprefix("{show:")
            if tag.isdigit():  # else not a key of ours
                found.append((kind, int(tag)))
    async with client.pipeline(transaction=False) as pipe:
        for kind, show_id in found:
            if kind == "blocked":
                pipe.smembers(keys.show_blocked(show_id))
            else:
                pipe.hgetall((keys.show_holds if kind == "holds" else keys.show_booked)(show_id))
        values = await pipe.execute()
    shows: dict[int, _Show] = defaultdict(_Show)
    for (kind, show_id), value in zip(found, values, strict=True):
        show = shows[show_id]
        if kind == "blocked":
            show.blocked = set(value)
        elif kind == "booked":
            show.booked = dict(value)
        for seat, raw in value.items() if kind == "holds" else ():
            try:
                show.holds[seat] = parse_hold(raw)
            except ValueError:
                show.malformed[seat] = raw
    return seconds * 1000 + micros // 1000, shows


def _compare(region: str, show_id: int, pg: _Show, rd: _Show, now_ms: int) -> list[Violation]:
    def v(check: str, seat: str, detail: str) -> Violation:
        return Violation(check, region, show_id, seat, detail)

    out = [v("redis_booked", s, f"PostgreSQL: {_pg_state(pg, s)}; Redis booked: "
                                f"{rd.booked.get(s, 'no entry')}")
           for s in sorted(pg.booked.keys() | rd.booked.keys())
           if pg.booked.get(s) != rd.booked.get(s)]
    out += [v("redis_hold", s, f"unreadable Redis hold {raw!r}") for s, raw in rd.malformed.items()]
    for seat, (booking, expires) in sorted(rd.holds.items()):
        if expires > now_ms + CLOCK_SLACK_MS and pg.holds.get(seat, ("",))[0] != booking:
            out.append(v("redis_hold", seat, f"Redis holds it for {booking} "
                         f"({(expires - now_ms) / 1000:.0f}s left); PostgreSQL: "
                         f"{_pg_state(pg, seat)}"))
    for seat, (booking, expires) in sorted(pg.holds.items()):
        held = rd.holds.get(seat)
        if expires > now_ms + CLOCK_SLACK_MS and (held is None or held[0] != booking
                                                  or held[1] <= now_ms):
            out.append(v("pg_hold", seat, f"PostgreSQL: LOCKED by {booking} "
                         f"({(expires - now_ms) / 1000:.0f}s left); Redis hold: "
                         f"{'none' if held is None else f'{held[0]} until {held[1]} ms'}"))
    out += [v("redis_blocked", s, "UNAVAILABLE in PostgreSQL, not blocked in Redis"
              if s in pg.blocked else f"blocked in Redis, {_pg_state(pg, s)} in PostgreSQL")
            for s in sorted(pg.blocked ^ rd.blocked)]
    return out


def _pg_state(pg: _Show, seat: str) -> str:
    if seat in pg.booked:
        return f"BOOKED by {pg.booked[seat]}"
    if seat in pg.holds:
        return f"LOCKED by {pg.holds[seat][0]}"
    return "UNAVAILABLE" if seat in pg.blocked else "AVAILABLE"


# -- the audit ----------------------------------------------------------------

async def _audit_pg(topology: Topology, region: str, grace_s: float
                    ) -> tuple[dict[str, int], dict[str, int], list[Violation], dict[int, _Show],
                               _Ownership]:
    members = topology.region(region).pg_members
    try:
        conn = await connect_primary(members, topology.secrets,
                                     timeout=PG_CONNECT_TIMEOUT_S,
                                     command_timeout=PG_COMMAND_TIMEOUT_S,
                                     server_settings=PG_TOOL_SESSION)
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                bookings = await _counts(conn, "booking", BOOKING_STATUSES)
                seats = await _counts(conn, "show_seat", SEAT_STATUSES)
                found = await _double_sales(conn, region)
                found += await _sales(conn, region)
                found += await _money(conn, region, grace_s)
                found += await _admissions(conn, region)
                found += await _stale_holds(conn, region,
                                            topology.settings.sweep_interval_s + grace_s)
                found += [Violation(f.check, region, f.show_id, None, f.detail)
                          for f in await onsale_findings(conn)]
                shows = await _pg_shows(conn)
                homes = await _ownership(conn)
        finally:
            await conn.close()
    except UNREACHABLE as exc:
        raise RegionUnreachable(f"postgres primary {', '.join(map(str, members))}: "
                                f"{_reason(exc)}") from exc
    return bookings, seats, found, shows, homes


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _audit_region(topology: Topology, region: str, grace_s: float
                        ) -> tuple[RegionCounts, list[Violation], _Ownership]:
    bookings, seats, found, pg_shows, homes = await _audit_pg(topology, region, grace_s)
    client = make_master(topology, region, near=region, timeout_s=REDIS_TIMEOUT_S)
    try:
        now_ms, redis_shows = await _redis_shows(client)
    except UNREACHABLE as exc:
        raise RegionUnreachable(f"redis master of {region}: {_reason(exc)}") from exc
    finally:
        await client.aclose()
    show_ids = sorted(pg_shows.keys() | redis_shows.keys())
    for show_id in show_ids:
        found += _compare(region, show_id, pg_shows.get(show_id, _Show()),
                          redis_shows.get(show_id, _Show()), now_ms)
    return RegionCounts(bookings, seats, len(show_ids)), found, homes


async def run_audit(topology: Topology, *, grace_s: float = DEFAULT_GRACE_S) -> AuditReport:
    """Audit every region side by side; a region that does not answer is named, not fatal."""
    regions = list(topology.regions)
    results = await asyncio.gather(*(_audit_region(topology, r, grace_s) for r in regions),
                                   return_exceptions=True)
    report = AuditReport()
    homes: dict[str, _Ownership] = {}
    for region, result in zip(regions, results, strict=True):
        if isinstance(result, RegionUnreachable):
            report.unreachable[region] = str(result)
        elif isinstance(result, BaseException):
            raise result
        else:
            report.regions[region], found, homes[region] = result
            report.violations += found
    if not report.unreachable:  # homes are judged only with every region's word
        report.violations += _across_regions(topology, homes)
    try:
        nodes = await audit_node_caches(topology, report.regions.keys())
    except UNREACHABLE as exc:  # a primary that answered a moment ago
        report.unreachable["node caches"] = f"PostgreSQL: {_reason(exc)}"
        return report
    report.node_caches = nodes.checked
    report.unreachable.update(nodes.unreachable)
    report.violations += [_cache_violation(d) for d in nodes.diffs]
    return report


def _cache_violation(diff: CacheDiff) -> Violation:
    return Violation("node_cache", diff.region, diff.show_id, diff.seat_id,
                     f"node {diff.node} shows {diff.cached} (version {diff.version}, "
                     f"generation {diff.generation}); PostgreSQL: {diff.truth}")


def print_report(report: AuditReport, file: TextIO | None = None) -> None:
    """Counts per region, then the first LISTED violations and how many there are."""
    def line(text: str = "") -> None:
        print(text, file=file or sys.stdout)  # sys.stdout now, not at import (capture, redirect)

    for region, counts in report.regions.items():
        line(f"{region}: {counts.shows_checked} shows checked against Redis")
        line("  bookings  " + "  ".join(f"{s} {n}" for s, n in counts.bookings.items()))
        line("  seats     " + "  ".join(f"{s} {n}" for s, n in counts.seats.items()))
    if report.node_caches:
        line(f"node caches: {sum(report.node_caches.values())} cached shows of "
             f"{len(report.node_caches)} nodes checked against PostgreSQL")
    for region, reason in report.unreachable.items():
        line(f"{region}: UNREACHABLE, not audited ({reason})")
    if not report.violations:
        line("no violations" + (" in the regions audited" if report.unreachable else ""))
        return
    line(f"{len(report.violations)} violation(s):")
    for v in report.violations[:LISTED]:
        where = f"show {v.show_id}" if v.show_id is not None else "-"
        where += f" seat {v.seat_id}" if v.seat_id is not None else ""
        line(f"  [{v.check}] {v.region} {where}: {v.detail}")
    if len(report.violations) > LISTED:
        line(f"  ... and {len(report.violations) - LISTED} more")


def save_last(topology: Topology, report: AuditReport) -> None:
    """Leave a summary in the run folder for the operator page (`/ops/overview`); the
    full list of violations stays with the caller."""
    path = audit_report_path(topology)
    by_check: dict[str, int] = {}
    for v in report.violations:
        by_check[v.check] = by_check.get(v.check, 0) + 1
    summary = {"finished_at": datetime.now(UTC).isoformat(), "exit_code": report.exit_code,
               "violations": len(report.violations), "by_check": by_check,
               "first": [asdict(v) for v in report.violations[:LISTED]],
               "unreachable": report.unreachable}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(summary, indent=1, default=str))
        partial.replace(path)  # a reader never sees half a report
    except OSError as exc:
        print(f"audit: could not save the summary to {path}: {exc}", file=sys.stderr)


async def audit_command(topology: Topology, as_json: bool = False, *,
                        grace_s: float = DEFAULT_GRACE_S) -> int:
    """`bookcluster audit`: 0 clean, 1 on any violation, 2 if a region could not be reached."""
    report = await run_audit(topology, grace_s=grace_s)
    save_last(topology, report)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print_report(report)
    return report.exit_code
