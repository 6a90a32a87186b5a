"""One Pub/Sub connection per source region, on this region's local replica.

Masters publish every seat change on the show's own channel; replication
carries the publish to the replicas, so a node hears changes without leaving
its own region. A node follows only the shows it serves: it subscribes to a
show's channel when its cache reads the show (and waits for the subscription
before the read, see `seatcache.py`), keeps it while the show is cached or has
live sockets, and unsubscribes when neither holds. The region-wide channel
(`keys.SEAT_CHANGES_CHANNEL`: tools' RESETs) is always subscribed. Each message
is checked (`changes.parse_change`), then patches the seat cache and fans out
to live sockets; a malformed one is counted and skipped. Every reply that has
arrived is handled per wake-up (`pubsub.py`).

Each subscription is supervised: a lost connection, a replica that stops
answering PINGs, or any other exception is logged and counted, drops that
region's cached shows (messages may have been missed), tells live sockets
to re-sync, and reconnects after a backoff.

Failovers (Sentinel) move masters, not the servers of a region: a replica in
another region is pointed at the new master (Sentinel closes our subscription
there; we subscribe again), and in the master's own region the replica *is*
the new master (publishes reach subscribers of the master too). Both of this
region's servers hold its own seats, so the subscription to this region's
changes moves to the other one when the one it used fails (it may be the
master that died). The task itself only ends at
`close()`; if it ends any other way it is logged, counted and started again.
`/readyz` reads `readiness()`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import hiredis

from bookcluster.catalog import Catalog
from bookcluster.metrics import NodeMetrics
from bookcluster.seats import keys
from bookcluster.seats.changes import MalformedChange, parse_change
from bookcluster.seats.live import LiveHub
from bookcluster.seats.maps import SeatMaps
from bookcluster.seats.pubsub import PubSubConnection
from bookcluster.stores.connections import Connections
from bookcluster.topology.model import Endpoint

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 1.0
RECONNECT_DELAY_S = 0.5  # doubled per failure in a row, up to MAX_RECONNECT_DELAY_S
MAX_RECONNECT_DELAY_S = 5.0
STABLE_AFTER_S = 10.0  # a subscription up this long before it failed resets the backoff
PING_AFTER_S = 1.0  # silence on the subscription before we PING the replica
# No message, PONG or subscribe reply for this long: the connection is dead even if
# TCP has not noticed (a paused or partitioned replica). Generous: a node under
# load may be slow to read, and a false alarm costs a cache drop.
SILENT_LIMIT_S = 5.0
DOWN_GRACE_S = 2.0  # readyz: a subscription down longer than this makes the node unready
WARN_EVERY_S = 10.0  # at most one malformed-message warning per source this often


REGION_CHANNEL = keys.SEAT_CHANGES_CHANNEL.encode()
SHOW_CHANNEL_PREFIX = keys.SHOW_CHANGES_PREFIX.encode()


class ReplicaSilent(Exception):
    """The subscription's connection is open but the replica stopped answering."""


class ReplicaRefused(Exception):
    """The replica answered a subscription command with an error."""


@dataclass
class Feed:
    """One source region's connection and the shows it follows on it."""

    conn: PubSubConnection | None = None  # None while down
    wanted: set[int] = field(default_factory=set)  # shows this node follows
    # Shows whose last command on `conn` was SUBSCRIBE, and per show one future per
    # SUBSCRIBE not yet confirmed, oldest first: replies come in command order, so an
    # UNSUBSCRIBE and SUBSCRIBE racing each other cannot be mistaken for one another.
    sent: set[int] = field(default_factory=set)
    unconfirmed: dict[int, deque[asyncio.Future[None]]] = field(default_factory=dict)

    def confirmed(self, show_id: int) -> None:
        waiting = self.unconfirmed.get(show_id)
        if waiting:
            future = waiting.popleft()
            if not future.done():
                future.set_result(None)
            if not waiting:
                del self.unconfirmed[show_id]

    def detach(self) -> None:
        """The connection is gone: release everyone waiting on it."""
        self.conn = None
        self.sent.clear()
        for waiting in self.unconfirmed.values():
            for future in waiting:
                if not future.done():
                    future.set_result(None)
        self.unconfirmed.clear()


@dataclass
class SourceState:
    """How one source region's subscription is doing (read by /readyz and tests)."""

    subscribed: bool = False
    changed_at: float = field(default_factory=time.time)  # wall clock of the last up/down
    up_or_down_since: float = field(default_factory=time.monotonic)
    reason: str = "not subscribed yet"
    restarts: int = 0
    failures: int = 0  # in a row, for the backoff
    last_change: float | None = None  # monotonic: last change message applied
    warned_at: float = -math.inf
    unwarned: int = 0  # malformed messages since the last warning


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


class ChangeListener:
    def __init__(self, connections: Connections, catalog: Catalog, seatmaps: SeatMaps,
                 hub: LiveHub, metrics: NodeMetrics) -> None:
        self._connections = connections
        self._catalog = catalog
        self._seatmaps = seatmaps
        self._hub = hub
        self._metrics = metrics
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._retired: list[asyncio.Task[None]] = []
        self._closing = False
        self.subscribed: dict[str, asyncio.Event] = {}
        self.sources: dict[str, SourceState] = {}
        self.feeds: dict[str, Feed] = {}
        seatmaps.cache.watcher = self
        hub.on_idle = self.unwatch

    @property
    def region(self) -> str:
        return self._connections.local_region

    def start(self) -> None:
        for source in self._connections.topology.regions:
            self._add_source(source)

    def _add_source(self, source: str) -> None:
        self.subscribed[source] = asyncio.Event()
        self.sources[source] = SourceState()
        feed = self.feeds[source] = Feed()
        self._metrics.listener_subscribed.labels(self.region, source).set(0)
        self._metrics.listener_shows.labels(self.region, source).set_function(
            functools.partial(len, feed.sent))
        self._spawn(source)

    def adopt(self, moved: dict[int, str]) -> None:
        """A new topology epoch (`topology_swap.py`): follow the regions it adds, stop
        following those it drops, and stop following `moved` shows (show -> old home) on
        their old home's feed; their next read, or their sockets' re-sync, follows them
        at the new home."""
        regions = set(self._connections.topology.regions)
        for source in sorted(regions - set(self.feeds)):
            self._add_source(source)
        for source in sorted(set(self.feeds) - regions):
            task = self._tasks.pop(source, None)  # popped first: `_ended` lets it go
            if task is not None:
                task.cancel()
                self._retired.append(task)  # awaited at close
            del self.feeds[source], self.sources[source], self.subscribed[source]
        for show_id, old in moved.items():
            feed = self.feeds.get(old)
            if feed is None:
                continue
            feed.wanted.discard(show_id)
            if feed.conn is not None and show_id in feed.sent:
                feed.conn.unsubscribe(keys.show_changes(show_id))
                feed.sent.discard(show_id)

    def _spawn(self, source: str) -> None:
        task = asyncio.create_task(self._run(source), name=f"listen-{source}")
        task.add_done_callback(functools.partial(self._ended, source))
        self._tasks[source] = task

    def _ended(self, source: str, task: asyncio.Task[None]) -> None:
        """`_run` never returns; if its task ends anyway (cancelled by a stranger, a
        BaseException), say so and start another."""
        if self._closing or self._tasks.get(source) is not task:
            return
        error = None if task.cancelled() else task.exception()
        self._spawn(source)  # first, so that nothing below can prevent it
        how = "cancelled" if task.cancelled() else type(error).__name__ if error else "returned"
        log.error("listener for %s changes ended (%s); restarted", source, how, exc_info=error)
        self._lost(source, "ended", "listener task ended")

    async def close(self) -> None:
        self._closing = True
        tasks = list(self._tasks.values()) + self._retired
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    # -- following shows (called by the seat cache and the live hub) -----------

    def _feed_of(self, show_id: int) -> Feed | None:
        source = self._catalog.region_of_show(show_id)
        return self.feeds.get(source) if source is not None else None

    async def watch(self, show_id: int) -> None:
        """Follow a show; returns once its changes reach this node, or at once while its
        region's connection is down (the resubscription drops what was read meanwhile)."""
        feed = self._feed_of(show_id)
        if feed is None:
            return
        feed.wanted.add(show_id)
        if feed.conn is None:
            return
        if show_id not in feed.sent:
            feed.conn.subscribe(keys.show_changes(show_id))
            feed.sent.add(show_id)
            feed.unconfirmed.setdefault(show_id, deque()).append(
                asyncio.get_running_loop().create_future())
        waiting = feed.unconfirmed.get(show_id)
        if waiting:
            await asyncio.shield(waiting[-1])  # the latest SUBSCRIBE: earlier ones may be undone

    def unwatch(self, show_id: int) -> None:
        """Stop following a show unless it is still cached or has live sockets."""
        if self._seatmaps.cache.holds(show_id) or self._hub.watching(show_id):
            return
        feed = self._feed_of(show_id)
        if feed is None:
            return
        feed.wanted.discard(show_id)
        if feed.conn is not None and show_id in feed.sent:
            feed.conn.unsubscribe(keys.show_changes(show_id))
            feed.sent.discard(show_id)

    # -- the connection ------------------------------------------------------

    def _servers_of(self, source: str) -> list[Endpoint]:
        """This region's Redis servers that hold `source`'s seats, in order of preference:
        its replica of `source`'s master; for our own region also that master."""
        local = self._connections.topology.region(self.region)
        servers = [local.redis_replicas[source]]
        if source == self.region:
            servers.append(local.redis_master)
        return servers

    async def _run(self, source: str) -> None:
        servers = self._servers_of(source)
        attempt = 0
        while True:
            endpoint = servers[attempt % len(servers)]
            attempt += 1  # the next server after a failure (there is one for our region)
            conn = None
            try:
                conn = await PubSubConnection.open(
                    endpoint.host, endpoint.port,
                    self._connections.topology.secrets.redis_password, CONNECT_TIMEOUT_S)
                attempt -= 1  # connected: stay with this server after a later failure
                await self._listen(conn, source)
                reason, why = "ended", "subscription ended"
            except ReplicaSilent as exc:
                reason, why = "silent", str(exc)
                log.warning("subscription to %s changes is silent: %s", source, exc)
            except (OSError, hiredis.ProtocolError) as exc:  # TimeoutError, ConnectionError
                reason, why = "connection", f"{type(exc).__name__}: {exc}"
                log.warning("subscription to %s changes lost: %s", source, why)
            except Exception as exc:  # a bug must not stop this region's updates for good
                reason, why = "error", f"{type(exc).__name__}: {exc}"
                log.exception("listener for %s changes failed; reconnecting", source)
            finally:
                feed = self.feeds.get(source)  # gone when a new epoch dropped the region
                if feed is not None:
                    feed.detach()
                if conn is not None:
                    conn.close()
            await asyncio.sleep(self._lost(source, reason, why))

    async def _listen(self, conn: PubSubConnection, source: str) -> None:
        feed = self.feeds[source]
        feed.conn = conn
        # One command: every channel is subscribed before any later publish is sent to
        # us, so the region channel's reply stands for all of them (`_resubscribed`).
        conn.subscribe(keys.SEAT_CHANGES_CHANNEL, *map(keys.show_changes, feed.wanted))
        loop = asyncio.get_running_loop()
        for show_id in feed.wanted:
            feed.sent.add(show_id)
            feed.unconfirmed.setdefault(show_id, deque()).append(loop.create_future())
        heard = pinged = time.monotonic()
        while True:
            replies = await conn.read(PING_AFTER_S)
            now = time.monotonic()
            if not replies:
                if now - heard >= SILENT_LIMIT_S:
                    raise ReplicaSilent(f"no reply from {source}'s replica in "
                                        f"{now - heard:.1f} s")
                if now - pinged >= PING_AFTER_S:
                    conn.ping()
                    pinged = now
                continue
            heard = now
            for reply in replies:  # every reply that has arrived, in one wake-up
                await self._handle(reply, feed, source)

    async def _handle(self, reply: Any, feed: Feed, source: str) -> None:
        if isinstance(reply, hiredis.ReplyError):
            raise ReplicaRefused(str(reply))
        kind = reply[0]
        if kind == b"message":
            try:
                change = parse_change(reply[2])
            except MalformedChange as exc:
                self._malformed(source, exc, reply[2])
            else:
                await self.on_message(change, source)
        elif kind == b"subscribe":
            channel = reply[1]
            if channel == REGION_CHANNEL:
                self._resubscribed(source)
            elif channel.startswith(SHOW_CHANNEL_PREFIX):
                feed.confirmed(int(channel[len(SHOW_CHANNEL_PREFIX):]))
        # unsubscribe and pong replies only prove the replica is alive

    def _resubscribed(self, source: str) -> None:
        """Fresh subscription: anything cached from `source` may have missed changes."""
        self._metrics.subscription_resets.labels(self.region, source).inc()
        dropped = self._drop(source)
        state = self.sources[source]
        state.subscribed, state.reason = True, "subscribed"
        state.changed_at, state.up_or_down_since = time.time(), time.monotonic()
        self._metrics.listener_subscribed.labels(self.region, source).set(1)
        self.subscribed[source].set()
        log.info("subscribed to %s changes; dropped %d cached shows", source, dropped)

    def _lost(self, source: str, reason: str, why: str) -> float:
        """Count a failure, mark the subscription down, drop what it fed; returns the
        backoff before the next attempt."""
        self._metrics.listener_restarts.labels(self.region, source, reason).inc()
        state = self.sources[source]
        now = time.monotonic()
        stable = state.subscribed and now - state.up_or_down_since >= STABLE_AFTER_S
        state.failures = 1 if stable else state.failures + 1
        state.restarts += 1
        state.reason = why
        if state.subscribed:
            state.subscribed = False
            state.changed_at, state.up_or_down_since = time.time(), now
            # The message being handled may be half applied, and what we hold is
            # older than the replica: refill from it now (once, not on every retry,
            # so an outage does not keep sending reads to the home master). The
            # resubscription drops these shows once more.
            self._drop(source)
        self._metrics.listener_subscribed.labels(self.region, source).set(0)
        self.subscribed[source].clear()
        return float(min(MAX_RECONNECT_DELAY_S, RECONNECT_DELAY_S * 2 ** (state.failures - 1)))

    def _drop(self, source: str) -> int:
        dropped = self._seatmaps.cache.drop_shows(
            lambda show_id: self._catalog.region_of_show(show_id) != source)
        for show_id in dropped:
            self._hub.resync(show_id)
        return len(dropped)

    def _malformed(self, source: str, exc: MalformedChange, data: Any) -> None:
        self._metrics.listener_malformed.labels(self.region, source, exc.reason).inc()
        state = self.sources[source]
        now = time.monotonic()
        if now - state.warned_at < WARN_EVERY_S:
            state.unwarned += 1
            return
        more = f" ({state.unwarned} more since the last warning)" if state.unwarned else ""
        log.warning("skipped a malformed change from %s: %s: %r%s", source, exc,
                    data[:100], more)
        state.warned_at, state.unwarned = now, 0

    async def on_message(self, message: dict[str, Any], source: str) -> None:
        """Apply one change, already checked by `parse_change`."""
        self.sources[source].last_change = time.monotonic()
        if "ts" in message:
            delay = max(0.0, time.time() - message["ts"] / 1000)
            self._metrics.change_delay.labels(source, self.region).observe(delay)
        outcome = self._seatmaps.cache.apply(message)
        self._metrics.changes.labels(self.region, source, outcome).inc()
        if message["status"] == "RESET":
            self._hub.resync(message["show"])
        else:
            await self._hub.publish(message)

    def readiness(self) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
        """Per source: a readiness check ("ok" or why not) and details. A subscription
        down for less than DOWN_GRACE_S (a reconnect) still counts as ready."""
        now = time.monotonic()
        checks, details = {}, {}
        for source, state in self.sources.items():
            down_for = 0.0 if state.subscribed else now - state.up_or_down_since
            checks[source] = "ok" if down_for < DOWN_GRACE_S else \
                f"down since {_iso(state.changed_at)}: {state.reason}"
            details[source] = {
                "subscribed": state.subscribed, "since": _iso(state.changed_at),
                "restarts": state.restarts,
                "last_change_s": None if state.last_change is None
                else round(now - state.last_change, 3)}
        return checks, details
