"""Holds and the booking lifecycle, always in the show's home region.

Hold: the Redis script holds all seats or none (fast rejection of
contention), then PostgreSQL records the booking and stamps each seat with a
fencing token from a sequence. PostgreSQL decides: if its rows disagree the
hold is released and refused. Confirm lives in `confirm.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bookcluster.booking import ids, ledger
from bookcluster.booking.batches import HoldBatcher
from bookcluster.booking.checkin import CheckIn
from bookcluster.booking.limits import WriteTokens
from bookcluster.booking.models import (
    BestRequest,
    HoldRequest,
    booking_json,
    hold_answer,
    hold_json,
    payment_json,
)
from bookcluster.booking.onsales import OnSales
from bookcluster.booking.tickets import Tickets
from bookcluster.catalog import Catalog, SeatInfo, ShowInfo
from bookcluster.errors import (
    BookingNotPending,
    HoldExpired,
    HoldLimitReached,
    IdempotencyKeyReused,
    InvalidInput,
    NoBlockAvailable,
    NotFound,
    OrphanSeat,
    SeatsUnavailable,
    TicketUsed,
    TransactionAborted,
)
from bookcluster.metrics import NodeMetrics
from bookcluster.seats import best, keys, mirror
from bookcluster.seats import layout as seat_layout
from bookcluster.seats.home import HomeRegion
from bookcluster.seats.state import now_ms
from bookcluster.stores import deadline, ownership
from bookcluster.stores.connections import REDIS_COMMAND_TIMEOUT_S, Connections
from bookcluster.topology.errors import RegionUnavailable

log = logging.getLogger(__name__)

BOOKING_QUERY = """
SELECT b.*, array_agg(bs.seat_id ORDER BY bs.seat_id) AS seat_ids
FROM booking b JOIN booking_seat bs ON bs.booking_id = b.id
"""


# A user's booking list is answered from this node's memory for this long (one fetch
# for every caller meanwhile), unless the user wrote through this node since it was read.
LIST_CACHE_S = 1.0
LIST_CACHE_MAX = 20_000  # users; past this the cache starts over


def _script_cutoff() -> int:
    """When a hold script sent now must no longer change anything at the master: when
    this node stops waiting for its answer (the write's deadline, or the master
    client's socket timeout if sooner), less the clock margin (`deadline.script_ms`)."""
    return deadline.current().script_ms(REDIS_COMMAND_TIMEOUT_S)


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def validate_hold_request(body: Any, cap: int, user: str) -> list[str]:
    """The seats asked for, sorted (`models.HoldRequest`)."""
    return HoldRequest.parse(body, cap, user).seat_ids


class BookingService:
    def __init__(self, connections: Connections, catalog: Catalog, metrics: NodeMetrics) -> None:
        self.connections = connections
        self.catalog = catalog
        self.settings = connections.topology.settings
        self.limits = connections.topology.limits
        self.metrics = metrics
        self.home = HomeRegion(connections)
        self.tickets = Tickets(self.home, catalog, connections.topology.secrets,
                               tuple(connections.topology.regions))
        self.onsales = OnSales(connections, catalog, self.home)
        self.checkin = CheckIn(self.home, catalog, self.tickets, connections.topology.secrets,
                               connections.topology.settings, metrics)
        # user -> (monotonic time its fetch started, the answer)
        self._lists: dict[str, tuple[float, dict[str, Any]]] = {}
        self._listing: dict[str, tuple[float, asyncio.Task[dict[str, Any]]]] = {}
        self._written: dict[str, float] = {}  # user -> when a write of theirs here ended
        self._batchers: dict[str, HoldBatcher] = {}  # region -> its hold records' batcher
        self.layouts = seat_layout.Layouts(catalog)

    async def show_of_booking(self, booking_id: str) -> ShowInfo:
        try:
            return await self.catalog.show(ids.booking_show(booking_id))
        except NotFound:
            raise NotFound(f"no booking {booking_id!r}", id=booking_id) from None

    # -- hold ----------------------------------------------------------------

    async def hold(self, show: ShowInfo, request: HoldRequest, user_id: str,
                   key: str | None = None, address: str | None = None,
                   tokens: WriteTokens | None = None,
                   admission: str | None = None) -> tuple[dict[str, Any], bool]:
        """Hold the seats of a validated request (`HoldRequest.parse`, by the token's
        user `user_id`); returns the answer and whether it replays an earlier hold
        under the same Idempotency-Key (which is then returned as it is now). `address`:
        the client's, for the per-address caps (None: not checked). `tokens`: the
        write's rate-limit tokens, taken by the hold script itself (429 if refused).
        `admission`: the caller's on-sale admission pass (`onsales.admitted`), needed
        when the show is under an on-sale (best-available checks it the same way)."""
        seat_ids = request.seat_ids
        layout = await self.catalog.seats_by_id(show.screen_id)
        unknown = [s for s in seat_ids if s not in layout]
        if unknown:
            raise InvalidInput(f"show {show.id} has no seat(s) {', '.join(unknown)}",
                               field="seat_ids", seats=unknown)
        booking_id, earlier = await self._booking_for(show, user_id, key, seat_ids)
        if earlier is not None:
            return earlier, True
        async with self.onsales.admitted(show, user_id, admission, booking_id, len(seat_ids)):
            return await self._hold(show, booking_id, seat_ids, layout, user_id, key,
                                    address, tokens)

    async def _hold(self, show: ShowInfo, booking_id: str, seat_ids: list[str],
                    layout: dict[str, SeatInfo], user_id: str, key: str | None,
                    address: str | None,
                    tokens: WriteTokens | None) -> tuple[dict[str, Any], bool]:
        policy = (await self.catalog.screen(show.screen_id)).no_orphan_seats
        if policy == "refuse":
            refused = await self._orphans(show, seat_ids, held=False)
            if refused:
                self._count(show, "conflict")
                raise OrphanSeat(refused)
        result = await self._hold_script(show, "hold", [
            booking_id, self._ttl_ms(), self.home.epoch, _script_cutoff(),
            *seat_ids], tokens)
        if int(result[0]) != 1:
            self._count(show, "conflict")
            raise SeatsUnavailable(sorted(str(s) for s in result[1:]))
        # A warning is read while PostgreSQL records the hold (no time added to it).
        warning = asyncio.ensure_future(self._orphans(show, seat_ids, held=True)) \
            if policy == "warn" else None
        try:
            answer, replayed = await self._record(show, booking_id, user_id, seat_ids,
                                                  int(result[2]), layout, key, address)
        except BaseException:
            await _drop(warning)
            raise
        orphaned: list[str] = []
        if warning is not None and replayed:
            await _drop(warning)
        elif warning is not None:
            with contextlib.suppress(RegionUnavailable):  # only a warning: the hold stands
                orphaned = await warning
        if orphaned:
            answer["orphaned"] = orphaned
        return answer, replayed

    async def best(self, show: ShowInfo, request: BestRequest, user_id: str,
                   key: str | None = None, address: str | None = None,
                   tokens: WriteTokens | None = None,
                   admission: str | None = None) -> tuple[dict[str, Any], bool]:
        """Hold the best `request.count` seats free now (`seats/best.py`), chosen and held
        by one script at the home master, then recorded as `hold` records its seats.
        A retry under the same Idempotency-Key returns the seats the first attempt
        chose (the script re-holds the seats its booking holds; PostgreSQL's record
        answers a replay), never a second block."""
        layout = await self.catalog.seats_by_id(show.screen_id)
        booking_id, earlier = await self._booking_for(show, user_id, key, None)
        if earlier is not None:
            return {**earlier, "seats": earlier["seat_ids"]}, True
        async with self.onsales.admitted(show, user_id, admission, booking_id, request.count):
            return await self._best(show, request, booking_id, layout, user_id, key,
                                    address, tokens)

    async def _best(self, show: ShowInfo, request: BestRequest, booking_id: str,
                    layout: dict[str, SeatInfo], user_id: str, key: str | None,
                    address: str | None,
                    tokens: WriteTokens | None) -> tuple[dict[str, Any], bool]:
        args: list[Any] = [booking_id, self._ttl_ms(), self.home.epoch,
                           _script_cutoff(), request.count,
                           request.category or "", int(request.accessible),
                           int(request.allow_split)]
        more = [keys.show_layout(show.id)]
        result = await self._hold_script(show, "best", args, tokens, more)
        if int(result[0]) == -3:  # the master has no layout of the show yet
            await self.home.put_layout(show.region, show.id,
                                       await self.layouts.encoded(show))
            result = await self._hold_script(show, "best", args, tokens, more)
        if int(result[0]) != 1:
            self._count(show, "no_block")
            raise NoBlockAvailable(request.count, int(result[1]) if len(result) > 1 else 0)
        seat_ids = sorted(str(s) for s in result[3:])
        answer, replayed = await self._record(show, booking_id, user_id, seat_ids,
                                              int(result[2]), layout, key, address)
        return {**answer, "seats": answer["seat_ids"]}, replayed

    def _ttl_ms(self) -> int:
        return int(self.settings.hold_ttl_s * 1000)

    async def _booking_for(self, show: ShowInfo, user_id: str, key: str | None,
                           seat_ids: list[str] | None) -> tuple[str, dict[str, Any] | None]:
        """The booking id of a new hold, or the answer of the hold an earlier request
        under this Idempotency-Key made (`seat_ids` None: any seats of the show)."""
        if key is None:
            return ids.new_booking_id(show.id), None
        earlier = await self._held_under(show, user_id, ids.idempotency_key(key), seat_ids)
        return ids.keyed_booking_id(show.id, user_id, key), earlier

    async def _hold_script(self, show: ShowInfo, name: str, args: list[Any],
                           tokens: WriteTokens | None, more_keys: list[str] | None = None
                           ) -> Any:
        """Run a hold script (`name`, or `name`_limited taking the write's `tokens`):
        its answer, unless a rate limit refused (429), the show is not this region's
        to write at our epoch (moved, moving), or the script started on the master
        after the write's deadline (503; nothing changed, no token taken)."""
        try:
            if tokens is None:
                result = await self.home.script(show.region, name, show.id, args, more_keys)
            else:
                tokens.sent()
                result = await self.home.script(show.region, f"{name}_limited", show.id,
                                                [*args, *tokens.args()],
                                                [*(more_keys or []), *tokens.keys()])
        except RegionUnavailable:
            self._count(show, "unavailable")
            raise
        if int(result[0]) == -4:  # started past the deadline (`deadline.script_ms`)
            self._count(show, "unavailable")
            raise RegionUnavailable(show.region, "redis master (the deadline passed "
                                    "before the hold script ran)")
        if int(result[0]) == -2:  # a rate limit refused: nothing held
            assert tokens is not None
            tokens.answer(result)
        if int(result[0]) == -1:  # moving, or not this region's at our epoch
            self._count(show, "moved")
            raise ownership.script_refusal(str(result[1]), show.region)
        return result

    async def _record(self, show: ShowInfo, booking_id: str, user_id: str,
                      seat_ids: list[str], expires_ms: int, layout: dict[str, SeatInfo],
                      key: str | None, address: str | None) -> tuple[dict[str, Any], bool]:
        """Record a hold the master made in PostgreSQL (which decides: if it refuses,
        the Redis hold is undone) and answer it."""
        expires_at = ms_to_datetime(expires_ms)
        prices = {s: layout[s].price_paise for s in seat_ids}
        try:
            token = await self._record_hold(show, booking_id, user_id, seat_ids, expires_at,
                                            prices, key, address)
        except BaseException as exc:
            self._count(show, "failed")
            error = await self._undo_hold(show, booking_id, seat_ids, expires_at, key, exc)
            if error is exc:
                raise
            raise error from exc
        if token is None:  # a duplicate of this request recorded it first
            assert key is not None
            return await self._raced(show, booking_id, user_id, key, seat_ids), True
        self._count(show, "held")
        answer = hold_answer(booking_id, show.id, user_id, show.region, seat_ids,
                             sum(prices.values()), expires_at.isoformat(), token)
        if key is None and deadline.current().expired():
            # Made after its caller gave up (a forward's 503): nobody can use it,
            # so the sweeper releases it now rather than at expires_at.
            await self._abandon(show, booking_id, seat_ids)
            raise RegionUnavailable(show.region, "hold made after the deadline; released")
        return answer, False

    async def _orphans(self, show: ShowInfo, seat_ids: list[str], held: bool) -> list[str]:
        """The seats a manual pick of `seat_ids` leaves alone (`best.orphans`), by the home
        master's state of their rows now: before the hold (`held` False: the picked
        seats are free), or after it (they are held). A hint, as any seat map: a change
        between this read and the hold may make it stale."""
        screen_layout = await self.layouts.of_show(show)
        picked = set(seat_ids)
        rows = [row for row in screen_layout.rows if any(p.seat_id in picked for p in row)]
        seats = [p.seat_id for row in rows for p in row]
        state = await self.home.seat_state(show.region, show.id, seats)
        now = now_ms()
        free = {s for s in seats if state.status(s, now) == "AVAILABLE"}
        if held:
            free |= picked
        return best.orphans(screen_layout, free, picked)

    def _count(self, show: ShowInfo, outcome: str) -> None:
        self.metrics.holds.labels(self.metrics.region, show.region, outcome).inc()

    async def _held_under(self, show: ShowInfo, user_id: str, key: str,
                          seat_ids: list[str] | None) -> dict[str, Any] | None:
        """The hold an earlier request with this key made, as the hold answer (with its
        status now), or None. The key on another request is 422."""
        async with self.home.connection(show.region) as conn:
            row = await conn.fetchrow(
                BOOKING_QUERY + " WHERE b.user_id = $1 AND b.hold_key = $2 GROUP BY b.id",
                user_id, key)
        if row is None:
            return None
        if row["show_id"] != show.id or (seat_ids is not None
                                         and list(row["seat_ids"]) != seat_ids):
            raise IdempotencyKeyReused("this Idempotency-Key was used for another hold",
                                       booking_id=row["id"])
        return hold_json(booking_json(row, show.region))

    async def _raced(self, show: ShowInfo, booking_id: str, user_id: str, key: str,
                     seat_ids: list[str]) -> dict[str, Any]:
        """The answer for a hold that lost the race to a duplicate with its key."""
        try:
            earlier = await self._held_under(show, user_id, key, seat_ids)
        except IdempotencyKeyReused:  # the same key, other seats: drop what we held
            await self._release_quietly(show, booking_id, seat_ids)
            raise
        if earlier is None:  # bc_record_hold saw it under the user's lock
            raise RuntimeError(f"hold under key of {booking_id} vanished")
        return earlier

    async def _undo_hold(self, show: ShowInfo, booking_id: str, seat_ids: list[str],
                         expires_at: datetime, key: str | None,
                         exc: BaseException) -> BaseException:
        """After PostgreSQL did not record the hold: what to do with the Redis hold,
        and the error that says so. Redis holds only save wasted effort; without the
        PostgreSQL record a hold must not linger."""
        if not isinstance(exc, RegionUnavailable) or exc.outcome != "unknown":
            await self._release_quietly(show, booking_id, seat_ids)
            return exc
        # The statement may still commit. With a key, the retry gets that hold and
        # meets its own Redis hold (same booking id); otherwise both lapse. Without
        # one nobody could use it: release it, and the sweeper expires it if it lands.
        if key is None:
            await self._abandon(show, booking_id, seat_ids)
        return exc.unknown(lapses_by=expires_at.isoformat())

    async def _abandon(self, show: ShowInfo, booking_id: str, seat_ids: list[str]) -> None:
        """Release the Redis hold and have the sweeper expire the booking if its
        PostgreSQL write landed (or lands late): a 503 never leaves seats held."""
        await self._release_quietly(show, booking_id, seat_ids)
        with contextlib.suppress(RegionUnavailable):
            await self.home.abandon(show.region, booking_id)

    async def _record_hold(self, show: ShowInfo, booking_id: str, user_id: str,
                           seat_ids: list[str], expires_at: datetime,
                           prices: dict[str, int], key: str | None,
                           address: str | None) -> int | None:
        """`bc_record_hold`, with the other holds of this loop turn to the region
        (`batches.py`): PostgreSQL re-checks the seats and decides.
        None: a duplicate under the same key recorded its hold first."""
        record = await self._batcher(show.region).record(ledger.HoldItem(
            show=show.id, seats=seat_ids, booking=booking_id, user=user_id,
            expires=expires_at, prices=[prices[s] for s in seat_ids], hold_key=key,
            epoch=self.home.epoch, address=address))
        if record.fence is not None:
            refused = ownership.fence_refusal(record.fence, record.fence_detail, show.region)
            raise refused or RuntimeError(f"unknown fence refusal {record.fence!r}")
        if record.replayed:
            return None
        if record.limit_hit:
            self.metrics.limit_refusals.labels(self.metrics.region, record.limit_hit).inc()
            raise HoldLimitReached(record.limit_hit, getattr(self.limits, record.limit_hit))
        if record.refused:  # Redis lost state (restart, failover): PostgreSQL still decides
            raise SeatsUnavailable(record.refused)
        assert record.token is not None
        return record.token

    def _batcher(self, region: str) -> HoldBatcher:
        batcher = self._batchers.get(region)
        if batcher is None:
            caps = ledger.HoldCaps(
                max_hold=timedelta(seconds=self.settings.max_hold_s),
                max_seats=self.limits.seats_per_show, max_holds=self.limits.holds_per_user,
                max_address_seats=self.limits.seats_per_show_per_address,
                max_address_holds=self.limits.holds_per_address)
            batcher = self._batchers[region] = HoldBatcher(self.home, region, caps)
        return batcher

    async def close(self) -> None:
        """Close the hold batchers (holds queued are refused, those on their way end)."""
        batchers, self._batchers = list(self._batchers.values()), {}
        for batcher in batchers:
            await batcher.close()
        await self.onsales.close()

    async def _release_quietly(self, show: ShowInfo, booking_id: str, seats: list[str]) -> None:
        try:
            with deadline.running(None):  # clean-up gets its own time, past the request's
                await asyncio.shield(self.home.script(show.region, "release", show.id,
                                                      [booking_id, *seats]))
        except Exception:
            log.warning("could not release hold %s; it ends with its TTL", booking_id)

    # -- reads ---------------------------------------------------------------

    async def get(self, booking_id: str, owner: str | None) -> dict[str, Any]:
        """The booking, if `owner` holds it (None: any owner, for the region's own jobs).
        Another user's booking is NotFound: its existence is not revealed."""
        show = await self.show_of_booking(booking_id)
        async with self.home.connection(show.region) as conn:
            row = await conn.fetchrow(
                BOOKING_QUERY + " WHERE b.id = $1 AND ($2::text IS NULL OR b.user_id = $2) "
                "GROUP BY b.id", booking_id, owner)
            payments = await conn.fetch(
                "SELECT id, status, amount_paise FROM payment WHERE booking_id = $1 "
                "ORDER BY created_at", booking_id) if row is not None else []
        if row is None:
            raise NotFound(f"no booking {booking_id!r}", id=booking_id)
        answer = {**booking_json(row, show.region),
                  "payments": [payment_json(p) for p in payments]}
        if owner is not None and row["status"] == "CONFIRMED":
            answer["ticket"] = self.tickets.ticket_json(show, booking_id,
                                                        list(row["seat_ids"]))
        return answer

    def wrote(self, user_id: str) -> None:
        """A write of the user went through this node: their list is read afresh."""
        now = time.monotonic()
        if len(self._written) >= LIST_CACHE_MAX:  # only the last LIST_CACHE_S matter
            self._written = {u: t for u, t in self._written.items() if now - t < LIST_CACHE_S}
        self._written[user_id] = now
        self._lists.pop(user_id, None)

    async def list_for_user(self, user_id: str) -> dict[str, Any]:
        """Bookings of a user in every region, newest first: read at most once per
        LIST_CACHE_S on this node (callers meanwhile share the answer), and afresh after
        a write of theirs through this node. An answer missing a region is not kept."""
        if not ids.USER_ID.match(user_id):
            raise InvalidInput("malformed user id", field="user_id")
        now, written = time.monotonic(), self._written.get(user_id, -math.inf)
        cached = self._lists.get(user_id)
        if cached is not None and cached[0] > written and now - cached[0] < LIST_CACHE_S:
            return cached[1]
        running = self._listing.get(user_id)
        if running is None or running[0] <= written:
            running = (now, asyncio.ensure_future(self._list_now(user_id)))
            self._listing[user_id] = running
            running[1].add_done_callback(functools.partial(self._listed, user_id, running))
        return await asyncio.shield(running[1])

    def _listed(self, user_id: str, run: tuple[float, asyncio.Task[dict[str, Any]]],
                _: object) -> None:
        if self._listing.get(user_id) is run:
            del self._listing[user_id]
        task = run[1]
        if task.cancelled() or task.exception() is not None:
            return
        answer = task.result()
        if answer["unavailable_regions"] or run[0] <= self._written.get(user_id, -math.inf):
            return
        if len(self._lists) >= LIST_CACHE_MAX:
            self._lists.clear()
        self._lists[user_id] = (run[0], answer)

    async def _list_now(self, user_id: str) -> dict[str, Any]:
        """Bookings of a user in every region (each region holds its own), newest first."""

        async def one(region: str) -> list[dict[str, Any]]:
            async with self.home.connection(region) as conn:
                # Only theatres the region owns (or is moving out): a move's copy at its
                # target, or what its source has not cleaned up yet, is not listed twice.
                rows = await conn.fetch(
                    BOOKING_QUERY + " WHERE b.user_id = $1 AND EXISTS (SELECT 1 FROM show sh "
                    "JOIN screen sc ON sc.id = sh.screen_id JOIN theatre_owner o "
                    "ON o.theatre_id = sc.theatre_id WHERE sh.id = b.show_id "
                    "AND o.state IN ('OWNED', 'FROZEN')) GROUP BY b.id "
                    "ORDER BY b.created_at DESC LIMIT 200", user_id)
            return [booking_json(r, region) for r in rows]

        regions = list(self.connections.topology.regions)
        results = await asyncio.gather(*(one(r) for r in regions), return_exceptions=True)
        bookings: list[dict[str, Any]] = []
        unavailable = []
        for region, result in zip(regions, results, strict=True):
            if isinstance(result, BaseException):
                # `home.connection` turns every store failure into one of these two.
                if not isinstance(result, RegionUnavailable | TransactionAborted):
                    raise result
                unavailable.append(region)
            else:
                bookings.extend(result)
        bookings.sort(key=lambda b: b["created_at"], reverse=True)
        return {"user_id": user_id, "bookings": bookings, "unavailable_regions": unavailable}

    # -- cancel and extend ---------------------------------------------------

    async def cancel(self, booking_id: str, owner: str) -> dict[str, Any]:
        show = await self.show_of_booking(booking_id)
        async with self.home.write(show.region, show.id) as conn:
            cancelled = await ledger.cancel(conn, booking_id, owner)
            if cancelled.prior is None:
                raise NotFound(f"no booking {booking_id!r}", id=booking_id)
            if cancelled.prior == "CONFIRMED" and await ledger.admitted(conn, booking_id):
                raise TicketUsed(booking_id)
            if cancelled.prior not in ("INITIATED", "CANCELLED"):
                raise BookingNotPending(booking_id, cancelled.prior)
            freed = cancelled.freed
        await mirror.apply_now(self.home, show.region, released(freed))
        return await self.get(booking_id, owner)

    async def extend(self, booking_id: str, owner: str) -> dict[str, Any]:
        """One transaction that locks like confirm (`bc_sell`): the booking row, then its
        seat rows in seat-id order, so an extend and a confirm of the same booking queue
        up instead of deadlocking. Redis is extended under those locks; if the
        transaction then fails, Redis only holds longer than PostgreSQL, whose expiry
        the sweeper follows (it releases the Redis hold too)."""
        show = await self.show_of_booking(booking_id)
        async with self.home.write(show.region, show.id) as conn:
            row = await conn.fetchrow(
                "SELECT status, fence_token, hold_deadline, ARRAY(SELECT seat_id "
                "FROM booking_seat WHERE booking_id = b.id ORDER BY seat_id) AS seat_ids "
                "FROM booking b WHERE id = $1 AND user_id = $2 FOR UPDATE OF b",
                booking_id, owner)
            if row is None:
                raise NotFound(f"no booking {booking_id!r}", id=booking_id)
            if row["status"] != "INITIATED":
                raise BookingNotPending(booking_id, row["status"])
            seat_ids = list(row["seat_ids"])
            held = await conn.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM show_seat WHERE show_id = $1 "
                "AND seat_id = ANY($2::text[]) AND status = 'LOCKED' AND hold_booking_id = $3 "
                "AND fence_token = $4 ORDER BY seat_id FOR UPDATE) s",
                show.id, seat_ids, booking_id, row["fence_token"])
            if held != len(seat_ids):
                raise HoldExpired("the hold is gone; hold the seats again")
            deadline_ms = int(row["hold_deadline"].timestamp() * 1000)
            result = await self.home.script(
                show.region, "extend", show.id,
                [booking_id, int(self.settings.hold_ttl_s * 1000), deadline_ms, *seat_ids])
            code = int(result[0])
            if code == 0:
                raise HoldExpired("the hold is gone; hold the seats again", seats=result[1:])
            if code == -1:
                raise HoldExpired("the hold reached its maximum length",
                                  hold_deadline=row["hold_deadline"].isoformat())
            expires_at = ms_to_datetime(int(result[2]))
            await conn.execute(
                "WITH seats AS (UPDATE show_seat SET hold_expires_at = $3, updated_at = now() "
                "WHERE show_id = $1 AND seat_id = ANY($4::text[]) AND hold_booking_id = $2) "
                "UPDATE booking SET expires_at = $3, updated_at = now() WHERE id = $2",
                show.id, booking_id, expires_at, seat_ids)
        return await self.get(booking_id, owner)


async def _drop(task: asyncio.Future[Any] | None) -> None:
    """Cancel a task whose answer is no longer wanted, and wait for it to end."""
    if task is not None and not task.done():
        task.cancel()
    if task is not None:
        with contextlib.suppress(asyncio.CancelledError, RegionUnavailable):
            await task


def released(freed: list[ledger.Freed]) -> mirror.Changes:
    """Seats a ledger transition freed, as mirror changes."""
    return mirror.group(("release", show, booking, seat) for booking, show, seat in freed)
