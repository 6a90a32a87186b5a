"""A node's in-memory seat state per show, kept fresh by Pub/Sub — never by a blind TTL.

Each entry carries the show's version. Change messages (from the node's
local replicas, see `listener.py`) patch an entry when their version is the
next one, are ignored when old, and drop the entry on a gap, so a node never
serves a state older than the last version it heard of. A miss is filled
from the local replica of the show's home master by exactly one request per
show (single flight); messages that arrive during the fill are replayed on
top of it. The cache is an LRU with a size cap.

A node hears only the changes of shows it follows (`listener.py`): the cache
tells its `watcher` before it reads a show, and waits until the show's changes
will reach `apply`, so none between that read and the subscription is lost;
it tells it again when a show leaves the cache.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from bookcluster.seats.state import SeatState

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 2000


@dataclass
class Entry:
    state: SeatState
    verified_at: float  # wall clock: when this state was last known current
    rendered: dict[str, Any] = field(default_factory=dict)  # views may memoise here


@dataclass
class Fill:
    future: asyncio.Future[Entry]
    pending: list[dict[str, Any]] = field(default_factory=list)


def patched(state: SeatState, message: dict[str, Any]) -> SeatState:
    """The state after one change message (its version is state.version + 1)."""
    holds, booked = dict(state.holds), dict(state.booked)
    seats, status, booking = message["seats"], message["status"], message.get("booking", "")
    if status == "LOCKED":
        for seat in seats:
            holds[seat] = (booking, int(message["expires_at"]))
    elif status == "AVAILABLE":  # a hold released, or a refunded sale (UNBOOK)
        for seat in seats:
            holds.pop(seat, None)
            if booked.get(seat) == booking:
                del booked[seat]
    elif status == "BOOKED":
        for seat in seats:
            holds.pop(seat, None)
            booked[seat] = booking
    else:
        raise ValueError(f"cannot patch with status {status!r}")
    return replace(state, version=int(message["version"]), holds=holds, booked=booked)


Loader = Callable[[int], Coroutine[Any, Any, SeatState]]


class Watcher(Protocol):
    """Subscribes the node to a show's changes (the listener)."""

    async def watch(self, show_id: int) -> None:
        """Returns once every later change of the show will reach `SeatCache.apply`."""

    def unwatch(self, show_id: int) -> None:
        """The cache no longer holds the show."""


class Unwatched:
    """No subscriptions (a cache without a listener, as in unit tests)."""

    async def watch(self, show_id: int) -> None:
        pass

    def unwatch(self, show_id: int) -> None:
        pass


class SeatCache:
    def __init__(self, capacity: int = DEFAULT_CAPACITY,
                 on_evict: Callable[[], None] | None = None) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        self._fills: dict[int, Fill] = {}
        self._on_evict = on_evict or (lambda: None)
        self.watcher: Watcher = Unwatched()

    def __len__(self) -> int:
        return len(self._entries)

    def holds(self, show_id: int) -> bool:
        """Cached or being filled: the node needs the show's changes."""
        return show_id in self._entries or show_id in self._fills

    def peek(self, show_id: int) -> Entry | None:
        return self._entries.get(show_id)

    def entries(self) -> list[tuple[int, Entry]]:
        """Every cached show and its entry, least recently used first (no LRU effect)."""
        return list(self._entries.items())

    async def get(self, show_id: int, load: Loader) -> tuple[Entry, bool]:
        """The entry for a show, filling it on a miss. Returns (entry, was_hit)."""
        entry = self._entries.get(show_id)
        if entry is not None:
            self._entries.move_to_end(show_id)
            return entry, True
        fill = self._fills.get(show_id)
        if fill is None:
            fill = Fill(asyncio.get_running_loop().create_future())
            self._fills[show_id] = fill
            try:
                entry = await self._load(show_id, fill, load)
            except BaseException as exc:
                fill.future.set_exception(exc)
                fill.future.exception()  # waiters re-raise it; don't warn if there are none
                raise
            finally:
                del self._fills[show_id]
                if show_id not in self._entries:
                    self.watcher.unwatch(show_id)
            fill.future.set_result(entry)
            return entry, False
        return await asyncio.shield(fill.future), True

    async def _load(self, show_id: int, fill: Fill, load: Loader) -> Entry:
        for _ in range(3):
            await self.watcher.watch(show_id)  # before the read: no change falls between
            replayed = self._replay(await load(show_id), fill.pending)
            if replayed is not None:
                entry = Entry(replayed, time.time())
                self._store(show_id, entry)
                return entry
            fill.pending.clear()  # a gap while we read: read again
        raise RuntimeError(f"show {show_id} changes faster than it can be read")

    @staticmethod
    def _replay(state: SeatState, pending: list[dict[str, Any]]) -> SeatState | None:
        for message in sorted(pending, key=lambda m: int(m["version"])):
            version = int(message["version"])
            if version <= state.version:
                continue
            if version != state.version + 1 or message["status"] == "RESET":
                return None
            state = patched(state, message)
        return state

    def _store(self, show_id: int, entry: Entry) -> None:
        self._entries[show_id] = entry
        self._entries.move_to_end(show_id)
        while len(self._entries) > self.capacity:
            evicted, _ = self._entries.popitem(last=False)
            self._on_evict()
            self.watcher.unwatch(evicted)

    def apply(self, message: dict[str, Any]) -> str:
        """Apply a change message; returns patched, stale, dropped, filling or absent."""
        show_id = int(message["show"])
        fill = self._fills.get(show_id)
        if fill is not None:
            fill.pending.append(message)
            return "filling"
        entry = self._entries.get(show_id)
        if entry is None:
            return "absent"
        version = int(message["version"])
        if version <= entry.state.version:
            return "stale"
        if version != entry.state.version + 1 or message["status"] == "RESET":
            del self._entries[show_id]  # a gap: we missed a change
            self.watcher.unwatch(show_id)
            return "dropped"
        self._entries[show_id] = Entry(patched(entry.state, message), time.time())
        return "patched"

    def drop_shows(self, keep: Callable[[int], bool]) -> list[int]:
        """Drop every entry whose show fails `keep` (e.g. after a lost subscription)."""
        dropped = [s for s in self._entries if not keep(s)]
        for show_id in dropped:
            del self._entries[show_id]
            self.watcher.unwatch(show_id)
        for show_id, fill in self._fills.items():
            if not keep(show_id):
                fill.pending.append({"show": show_id, "version": 1 << 62, "status": "RESET"})
        return dropped
