"""On-sales: the waiting room in front of a blockbuster's holds.

An operator opens an on-sale for shows of one home region; from then on a hold on
them needs an admission pass (`passes.py`). Users join the queue at the home region,
which gives each join a sequence number in PostgreSQL (`bc_onsale_join`); the place
follows from it (`queue_order.py`). Positions are answered from the reader's region
(`onsale_state.py`). The home region's admitter (`admitter.py`) moves the frontier.
The pass is checked in the hold path (`admitted`), for every route that holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets as random_ids
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bookcluster.booking import onsale_state, queue_order
from bookcluster.booking.join_batches import JoinBatcher
from bookcluster.booking.onsale_state import ONSALE_ID, Counters, OnSale
from bookcluster.booking.passes import AdmissionPass, QueueTicket, TokenRefused
from bookcluster.catalog import Catalog, ShowInfo
from bookcluster.errors import (
    AdmissionRefused,
    AdmissionRequired,
    InvalidOnSale,
    MalformedId,
    NotFound,
    OnSaleConflict,
    TicketRefused,
)
from bookcluster.loops import Loop
from bookcluster.seats.home import HomeRegion
from bookcluster.stores import deadline
from bookcluster.stores.connections import Connections
from bookcluster.stores.errors import PG_UNAVAILABLE, REDIS_UNAVAILABLE
from bookcluster.topology.errors import RegionUnavailable

log = logging.getLogger(__name__)

# Which shows are under an on-sale, as the hold path sees it: read from the home
# PostgreSQL at most this often per node and region (an on-sale guards its shows'
# holds within this long of its creation).
GUARD_REFRESH_S = 1.0
MAX_SHOWS = 50
WINDOW_S = (60, 3600)
MAX_LEAD = timedelta(days=30)  # opens_at..sale_at at most; sale_at at most this far ahead


def guard_fresh(read_started: float, now: float) -> bool:
    """Whether a node's list of on-sale shows, whose read started at `read_started`
    (monotonic), may still guard a hold at `now`: every on-sale created before the read
    started is in it, and `POST /ops/onsales` answers GUARD_REFRESH_S after creating
    one, so a hold after that answer must use a list read since."""
    return now - read_started < GUARD_REFRESH_S


def onsale_id(text: str) -> str:
    if not ONSALE_ID.match(text):
        raise MalformedId(f"malformed on-sale id {text!r}", id=text)
    return text


def onsale_show(onsale: str) -> int:
    """The show an on-sale id routes by (its first show): its home region is the on-sale's."""
    match = ONSALE_ID.match(onsale)
    assert match is not None
    return int(match.group(1))


def _time(body: dict[str, Any], field: str) -> datetime:
    value = body.get(field)
    try:
        at = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise InvalidOnSale(f"{field} must be an ISO-8601 time with a UTC offset", field=field)
    return at.astimezone(UTC)


def _int(body: dict[str, Any], field: str, default: int, low: int, high: int) -> int:
    value = body.get(field, default)
    if type(value) is not int or not low <= value <= high:
        raise InvalidOnSale(f"{field} must be an integer in [{low}, {high}]", field=field)
    return value


@dataclass(frozen=True)
class OnSaleRequest:
    shows: tuple[int, ...]
    opens_at: datetime
    sale_at: datetime
    window_s: int
    max_party: int

    @classmethod
    def parse(cls, body: Any, max_party: int, now: datetime) -> OnSaleRequest:
        if not isinstance(body, dict):
            raise InvalidOnSale("body must be an object with shows, opens_at, sale_at")
        unknown = set(body) - {"shows", "opens_at", "sale_at", "window_s", "max_party"}
        if unknown:
            raise InvalidOnSale(f"unknown field(s): {', '.join(sorted(unknown))}",
                                field=sorted(unknown)[0])
        shows = body.get("shows")
        if (not isinstance(shows, list) or not 1 <= len(shows) <= MAX_SHOWS
                or not all(type(s) is int and s > 0 for s in shows)
                or len(set(shows)) != len(shows)):
            raise InvalidOnSale(f"shows must be a list of 1 to {MAX_SHOWS} distinct show ids",
                                field="shows")
        opens_at, sale_at = _time(body, "opens_at"), _time(body, "sale_at")
        if opens_at > sale_at:
            raise InvalidOnSale("opens_at must not be after sale_at", field="opens_at")
        if sale_at - opens_at > MAX_LEAD or sale_at > now + MAX_LEAD:
            raise InvalidOnSale(f"the queue may open at most {MAX_LEAD.days} days before the "
                                f"sale, and the sale start at most {MAX_LEAD.days} days ahead",
                                field="sale_at")
        return cls(tuple(shows), opens_at, sale_at, _int(body, "window_s", 600, *WINDOW_S),
                   _int(body, "max_party", min(6, max_party), 1, max_party))


def position(onsale: OnSale, counters: Counters | None, ticket: QueueTicket,
             admitted_at_ms: int | None, now_ms: int, secret: str) -> dict[str, Any]:
    """The answer to a position poll, from the published counters (pure), with the
    interval to poll again after (`poll_after_s`, absent when the state is final)."""
    answer = _position(onsale, counters, ticket, admitted_at_ms, now_ms, secret)
    to_sale_s = onsale.sale_at.timestamp() - now_ms / 1000
    after = queue_order.poll_after_s(
        answer["state"], answer["estimated_wait_s"], queue_order.jitter_of(ticket.user, now_ms),
        to_sale_s=max(0.0, to_sale_s) if answer["place"] is None else None,
        joined=answer["joined"] or 0)
    if after is not None:
        answer["poll_after_s"] = after
    return answer


def queue_summary(counters: Counters | None) -> dict[str, Any]:
    """An on-sale's queue as the operator sees it, from the published counters (pure)."""
    if counters is None:
        return {"joined": 0, "admitted": 0, "waiting": 0, "rate_per_s": 0.0,
                "sold_out": False, "sealed": False, "last_wait_s": None,
                "wait_p50_s": None, "wait_p99_s": None, "abandoned": 0}
    waiting = max(0, counters.joined - counters.frontier)
    return {"joined": counters.joined, "admitted": counters.frontier, "waiting": waiting,
            "rate_per_s": counters.rate_per_s, "sold_out": counters.sold_out,
            "sealed": counters.seed is not None,
            "last_wait_s": queue_order.estimated_wait_s(waiting, counters.rate_per_s),
            "wait_p50_s": counters.wait_p50_s, "wait_p99_s": counters.wait_p99_s,
            "abandoned": counters.abandoned}


def _position(onsale: OnSale, counters: Counters | None, ticket: QueueTicket,
              admitted_at_ms: int | None, now_ms: int, secret: str) -> dict[str, Any]:
    answer: dict[str, Any] = {"onsale": onsale.id, "sale_at": onsale.sale_at.isoformat(),
                              "place": None, "ahead": None, "admitted": 0, "joined": None,
                              "estimated_wait_s": None, "rate_per_s": 0.0,
                              "state": "waiting"}
    if counters is None:
        return answer
    answer.update(admitted=counters.frontier, joined=counters.joined,
                  rate_per_s=counters.rate_per_s)
    place = queue_order.place(ticket.seq, counters.seed, counters.n_early)
    if place is None:  # before the sale: the early joiners' order is not drawn yet
        answer["estimated_wait_s"] = max(0.0, onsale.sale_at.timestamp() - now_ms / 1000)
        return answer
    ahead = max(0, place - counters.frontier)
    answer.update(place=place + 1, ahead=ahead,
                  estimated_wait_s=queue_order.estimated_wait_s(ahead, counters.rate_per_s))
    if place < counters.frontier and admitted_at_ms is not None:
        expires = admitted_at_ms / 1000 + onsale.window_s
        if now_ms / 1000 >= expires:
            answer["state"] = "expired"
            return answer
        answer.update(state="admitted", window_ends_at=datetime.fromtimestamp(
            expires, UTC).isoformat(), estimated_wait_s=0.0)
        answer["pass"] = AdmissionPass(onsale.id, ticket.user, onsale.shows, onsale.max_party,
                                       place, expires).sign(secret)
    elif counters.sold_out:
        answer.update(state="sold_out", estimated_wait_s=None)
    return answer


class OnSales:
    """On-sales as a node sees them: made and joined at the home region, positions
    answered from the local replicas, passes checked in the hold path."""

    def __init__(self, connections: Connections, catalog: Catalog, home: HomeRegion) -> None:
        self.connections = connections
        self.catalog = catalog
        self.home = home
        self._secret: str | None = None
        # region -> (monotonic time read, the epoch then, show -> its on-sale)
        self._guards: dict[str, tuple[float, int, dict[int, OnSale]]] = {}
        self._guard_locks: dict[str, asyncio.Lock] = {}
        self._guard_reads: dict[str, asyncio.Task[None]] = {}  # background re-reads
        self._join_batchers: dict[str, JoinBatcher] = {}  # on-sale -> its joins' batcher

    @property
    def secret(self) -> str:
        """The cluster's shared secret the tokens' keys derive from (read on first use)."""
        if self._secret is None:
            self._secret = self.connections.topology.secrets.get("forward_secret")
        return self._secret

    # -- the operator's ----------------------------------------------------------------

    async def create(self, body: Any) -> dict[str, Any]:
        cap = self.connections.topology.settings.max_seats_per_booking
        request = OnSaleRequest.parse(body, cap, datetime.now(UTC))
        shows: list[ShowInfo] = []
        for show_id in request.shows:
            try:
                shows.append(await self.catalog.show(show_id))
            except NotFound:
                raise InvalidOnSale(f"no show {show_id}", field="shows", show=show_id) from None
        regions = sorted({s.region for s in shows})
        if len(regions) != 1:
            raise InvalidOnSale("the shows of one on-sale must share one home region; these "
                                f"are in {', '.join(regions)}: open one on-sale per region",
                                field="shows", regions=regions)
        region = regions[0]
        onsale = OnSale(f"os{request.shows[0]}-{random_ids.token_hex(4)}", request.shows,
                        request.opens_at, request.sale_at, request.window_s,
                        request.max_party, region)
        async with self.home.transaction(region) as conn:
            taken = await conn.fetch(
                "SELECT show_id, onsale_id FROM onsale_show WHERE show_id = ANY($1::bigint[])",
                list(onsale.shows))
            if taken:
                raise OnSaleConflict("onsale_exists", "show(s) already under an on-sale",
                                     shows={r["show_id"]: r["onsale_id"] for r in taken})
            await conn.execute(
                "INSERT INTO onsale (id, show_ids, opens_at, sale_at, window_s, max_party) "
                "VALUES ($1, $2, $3, $4, $5, $6)", onsale.id, list(onsale.shows),
                onsale.opens_at, onsale.sale_at, onsale.window_s, onsale.max_party)
            try:
                await conn.executemany(
                    "INSERT INTO onsale_show (show_id, onsale_id) VALUES ($1, $2)",
                    [(s, onsale.id) for s in onsale.shows])
            except asyncpg.UniqueViolationError:  # a concurrent on-sale took one
                raise OnSaleConflict("onsale_exists", "show(s) already under an on-sale",
                                     shows=list(onsale.shows)) from None
            # Where its theatres are OWNED only (a move's freeze waits for this).
            await conn.execute("SELECT bc_onsale_own($1)", onsale.id)
        self._guards.pop(region, None)
        # The admitter publishes it every round; publishing now lists it at once.
        with contextlib.suppress(*REDIS_UNAVAILABLE):
            await onsale_state.publish_definition(self.connections.redis_master(region), onsale)
        # Every node re-reads its region's on-sales every GUARD_REFRESH_S / 4, and a hold
        # never goes on with a list read longer than GUARD_REFRESH_S ago (`guarding`):
        # once this answers, every live node refuses holds without a pass.
        with deadline.running(None):
            await asyncio.sleep(GUARD_REFRESH_S)
        return onsale.as_json()

    # -- anyone's ----------------------------------------------------------------------

    async def list(self) -> dict[str, Any]:
        """Every on-sale with its queue's counters, from this region's replicas of every
        master."""
        found: list[dict[str, Any]] = []
        unavailable = []
        for region in self.connections.topology.regions:
            replica = self.connections.redis_replica(region)
            try:
                onsales = await onsale_state.read_all(replica)
                counters = await onsale_state.read_counters(replica, [o.id for o in onsales])
                found.extend({**o.as_json(), "queue": queue_summary(counters[o.id])}
                             for o in onsales)
            except REDIS_UNAVAILABLE:
                unavailable.append(region)
        found.sort(key=lambda o: (o["sale_at"], o["id"]))
        return {"onsales": found, "unavailable_regions": unavailable}

    async def region_of(self, onsale: str) -> str:
        try:
            return (await self.catalog.show(onsale_show(onsale_id(onsale)))).region
        except NotFound:
            raise NotFound(f"no on-sale {onsale!r}", id=onsale) from None

    # -- a user's ----------------------------------------------------------------------

    async def join(self, onsale: str, user: str) -> dict[str, Any]:
        """At the home region: the user's queue ticket (the same one on every call). The
        joins of one loop turn to one on-sale are one call (`join_batches.py`)."""
        region = await self.region_of(onsale)
        joined = await self._join_batcher(region, onsale).join(user)
        if joined.state == "not_found":
            raise NotFound(f"no on-sale {onsale!r}", id=onsale)
        if joined.state == "not_open":
            raise OnSaleConflict("onsale_not_open", "the queue of this on-sale is not open yet",
                                 onsale=onsale)
        assert joined.seq is not None
        ticket = QueueTicket(onsale, user, joined.seq)
        try:
            answer = await self.position(onsale, user, ticket.sign(self.secret))
        except NotFound:  # created a moment ago: not in this region's replica yet
            async with self.home.connection(region) as conn:
                stored = await conn.fetchrow("SELECT * FROM onsale WHERE id = $1", onsale)
            assert stored is not None
            answer = position(OnSale.from_row(stored, region), None, ticket, None,
                              onsale_state.now_ms(), self.secret)
        return {**answer, "ticket": ticket.sign(self.secret),
                "joined_before": joined.state == "again"}

    def _join_batcher(self, region: str, onsale: str) -> JoinBatcher:
        batcher = self._join_batchers.get(onsale)
        if batcher is None:
            batcher = self._join_batchers[onsale] = JoinBatcher(self.home, region, onsale)
        return batcher

    async def position(self, onsale: str, user: str, token: str | None) -> dict[str, Any]:
        """From this region's replica of the home master only (reads stay home)."""
        ticket = self.ticket(onsale, token, user)
        definition, counters = await self.published(onsale)
        if definition is None:
            raise NotFound(f"no on-sale {onsale!r} (not here yet?)", id=onsale)
        return await self.answer(definition, counters, ticket)

    def ticket(self, onsale: str, token: str | None, user: str | None = None) -> QueueTicket:
        """The caller's queue ticket for `onsale` (of `user`, when the caller is known)."""
        if not token:
            raise TicketRefused("send the queue ticket from the join as X-Bookcluster-Queue-"
                                "Ticket (or ?ticket=)")
        try:
            ticket = QueueTicket.verify(self.secret, token)
        except TokenRefused:
            raise TicketRefused("the queue ticket is malformed or forged") from None
        if ticket.onsale != onsale or (user is not None and ticket.user != user):
            raise TicketRefused("the queue ticket is for another on-sale or user")
        return ticket

    async def published(self, onsale: str) -> tuple[OnSale | None, Counters | None]:
        """The on-sale and its counters as this region's replica of its home master has
        them (the home as this node routes it now: a moved theatre's, its new one)."""
        region = await self.region_of(onsale)
        try:
            return await onsale_state.read(self.connections.redis_replica(region), onsale)
        except REDIS_UNAVAILABLE as exc:
            raise RegionUnavailable(region, "local redis replica") from exc

    async def answer(self, definition: OnSale, counters: Counters | None,
                     ticket: QueueTicket) -> dict[str, Any]:
        """The ticket's position from published counters; an admitted user's also reads
        when they were admitted (their shopping window), from the same replica."""
        place = None if counters is None else queue_order.place(
            ticket.seq, counters.seed, counters.n_early)
        at_ms = None
        if counters is not None and place is not None and place < counters.frontier:
            client = self.connections.redis_replica(definition.region)
            try:
                at_ms = await onsale_state.admitted_at_ms(client, definition.id, place)
            except REDIS_UNAVAILABLE as exc:
                raise RegionUnavailable(definition.region, "local redis replica") from exc
        return position(definition, counters, ticket, at_ms, onsale_state.now_ms(),
                        self.secret)

    # -- the hold path -----------------------------------------------------------------

    async def guarding(self, show: ShowInfo) -> OnSale | None:
        """The on-sale the show is under, from a read of its home PostgreSQL that started
        less than GUARD_REFRESH_S ago (so a hold after `POST /ops/onsales` answered is
        guarded on every node). The node's own region is re-read by `guard_loop` four
        times a second, so a hold does not wait on the home primary before its script
        (a stalled primary would cost every hold a round trip); another region's list (a
        hold served away from its home: rare) is read on first use, then in the
        background while fresh enough. A list too old (the loop is behind, or the
        primary was unreachable) is read again before the hold goes on; if that read
        fails the hold is refused as "unknown" (a retry of a hold that may have happened
        must not learn "not applied"). A list read at an older epoch is read again too: a
        theatre that moved here brought its on-sales, and a node routes a hold of it here
        only once it took the move's epoch."""
        cached = self._guards.get(show.region)
        if (cached is None or not guard_fresh(cached[0], time.monotonic())
                or cached[1] != self.home.epoch):
            unavailable = RegionUnavailable(show.region, "postgres primary (on-sale list)")
            try:
                # Bounded by the hold's deadline, also while another read holds the lock.
                async with asyncio.timeout(deadline.current().left_for(
                        show.region, "postgres primary")):
                    await self._read_guards(show.region, fresh_s=GUARD_REFRESH_S / 4)
            except TimeoutError:
                raise unavailable.unknown() from None
            except RegionUnavailable as exc:
                raise unavailable.unknown() from exc
            cached = self._guards[show.region]
        elif time.monotonic() - cached[0] > GUARD_REFRESH_S / 2:
            self._read_soon(show.region)
        return cached[2].get(show.id)

    def guard_loop(self, region: str) -> Loop:
        """Keeps this node's region's on-sale list about GUARD_REFRESH_S / 2 old at most."""
        async def round_() -> None:
            await self._read_guards(region, fresh_s=GUARD_REFRESH_S / 4)
        return Loop("onsales", round_, GUARD_REFRESH_S / 4,
                    expected=(RegionUnavailable, *PG_UNAVAILABLE))

    async def _read_guards(self, region: str, fresh_s: float = GUARD_REFRESH_S) -> None:
        lock = self._guard_locks.setdefault(region, asyncio.Lock())
        async with lock:  # one read at a time per region, however many ask
            cached, epoch = self._guards.get(region), self.home.epoch
            if (cached is not None and cached[1] == epoch
                    and time.monotonic() - cached[0] < fresh_s):
                return
            started = time.monotonic()
            async with self.home.connection(region) as conn:
                rows = await conn.fetch("SELECT * FROM onsale")
            by_show = {}
            for row in rows:
                o = OnSale.from_row(row, region)
                by_show.update(dict.fromkeys(o.shows, o))
            self._guards[region] = (started, epoch, by_show)

    def _read_soon(self, region: str) -> None:
        task = self._guard_reads.get(region)
        if task is None or task.done():
            self._guard_reads[region] = asyncio.create_task(self._reread_guards(region))

    async def _reread_guards(self, region: str) -> None:
        try:
            with deadline.running(None):  # its own time, not the hold's that started it
                await self._read_guards(region)
        except Exception as exc:  # the last list stays; the next hold tries again
            log.warning("re-reading the on-sales of %s failed: %s", region, exc)

    async def close(self) -> None:
        """Stop the background re-reads and the join batchers."""
        batchers, self._join_batchers = list(self._join_batchers.values()), {}
        for batcher in batchers:
            await batcher.close()
        tasks, self._guard_reads = list(self._guard_reads.values()), {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def admitted(self, show: ShowInfo, user: str, token: str | None, booking_id: str,
                       seats: int) -> AsyncIterator[None]:
        """Around a hold of `seats` seats as `booking_id`: refuses it (403) unless the show
        is under no on-sale or `token` is a valid pass of `user` for it, not used for
        another hold; records the use, and gives the pass back if the hold is refused."""
        onsale = await self.guarding(show)
        if onsale is None:
            yield
            return
        if not token:
            raise AdmissionRequired(onsale.id)
        try:
            admission = AdmissionPass.verify(self.secret, token)
        except TokenRefused:
            raise AdmissionRefused("admission_forged", onsale=onsale.id) from None
        if admission.onsale != onsale.id or show.id not in admission.shows:
            raise AdmissionRefused("admission_wrong_show", onsale=onsale.id)
        if admission.user != user:
            raise AdmissionRefused("admission_not_yours", onsale=onsale.id)
        if time.time() >= admission.expires_at:
            raise AdmissionRefused("admission_expired", onsale=onsale.id,
                                   expired_at=datetime.fromtimestamp(
                                       admission.expires_at, UTC).isoformat())
        if seats > admission.max_party:
            raise AdmissionRefused("admission_party_too_large", onsale=onsale.id,
                                   max_party=admission.max_party)
        async with self.home.connection(show.region, writes=True) as conn:
            holder = await conn.fetchval("SELECT bc_onsale_use_pass($1, $2, $3)",
                                         onsale.id, user, booking_id)
        if holder != booking_id:
            raise AdmissionRefused("admission_used", onsale=onsale.id, booking_id=holder)
        try:
            yield
        except BaseException as exc:
            if not (isinstance(exc, RegionUnavailable) and exc.outcome == "unknown"):
                await self._give_back(show.region, onsale.id, user, booking_id)
            raise

    async def _give_back(self, region: str, onsale: str, user: str, booking_id: str) -> None:
        try:
            async with self.home.connection(region, writes=True) as conn:
                await conn.execute("SELECT bc_onsale_unuse_pass($1, $2, $3)",
                                   onsale, user, booking_id)
        except Exception:
            log.warning("could not give back the admission pass of %s (hold %s refused)",
                        user, booking_id)
