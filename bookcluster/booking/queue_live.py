"""Live queue positions over WebSockets: sockets tracked per on-sale in this node's memory.

A socket (`GET /onsales/{id}/live?ticket=`) first gets its user's position (the answer
of the position route). Then, whenever the on-sale's published counters move (the
frontier, sold out, the early joiners' order drawn: the home admitter's rounds), one
`queue` message, the same text for every socket of the on-sale, says how many are
admitted; the page works out its people ahead and wait from its place. A socket whose
state changes with it (admitted: it gets its pass; sold out; its place drawn at the
sale's start) gets its own position instead, computed here from the counters (only an
admission reads when it happened, once per user).

The counters are read from this region's replica of the on-sale's home master (reads
stay home) by one watcher per on-sale with sockets on this node, every WATCH_S: never a
read per socket or per user. The watcher is the hub's own task, started with the
on-sale's first socket and cancelled with its last; a read that fails is logged and
counted (`on_failure`) and tried again next round, the sockets stay. A socket that
cannot take a message within SEND_TIMEOUT_S is closed; its page polls instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bookcluster.booking import queue_order
from bookcluster.booking.onsale_state import Counters, OnSale
from bookcluster.booking.passes import QueueTicket
from bookcluster.loops import cancel_and_wait

log = logging.getLogger(__name__)

WATCH_S = 0.5  # the admitter publishes every 0.5 s
SEND_TIMEOUT_S = 1.0
# How a WebSocket that went away shows itself in aiohttp (a send or close on it).
GONE = (ConnectionError, TimeoutError, RuntimeError)

# The on-sale's published state, read from this region's replica: (definition, counters).
Read = Callable[[str], Awaitable[tuple[OnSale | None, Counters | None]]]
# A user's position from that state (the position route's answer).
Answer = Callable[[OnSale, Counters | None, QueueTicket], Awaitable[dict[str, Any]]]
OnFailure = Callable[[str, str], None]


def _ignore(what: str, why: str) -> None:
    pass


def state_of(ticket: QueueTicket, counters: Counters | None) -> str:
    """What a socket's position depends on beyond the admitted count (pure): `unplaced`
    before the sale draws the early joiners' order, then `admitted`, `sold_out` or
    `waiting`. A change sends the socket its own position."""
    if counters is None:
        return "unplaced"
    place = queue_order.place(ticket.seq, counters.seed, counters.n_early)
    if place is None:
        return "unplaced"
    if place < counters.frontier:
        return "admitted"
    return "sold_out" if counters.sold_out else "waiting"


def queue_message(onsale: str, counters: Counters) -> dict[str, Any]:
    """The message every socket of the on-sale gets when its counters move (pure)."""
    return {"type": "queue", "onsale": onsale, "admitted": counters.frontier,
            "joined": counters.joined, "rate_per_s": counters.rate_per_s,
            "sold_out": counters.sold_out, "sealed": counters.seed is not None}


def change_key(counters: Counters | None) -> tuple[Any, ...] | None:
    """What a push follows: the frontier, sold out and the draw (not the rate's jitter)."""
    if counters is None:
        return None
    return counters.frontier, counters.sold_out, counters.seed, counters.n_early


@dataclass(eq=False)
class QueueSocket:
    onsale: str
    ticket: QueueTicket
    ws: web.WebSocketResponse
    state: str = "unplaced"  # as of the last message it was sent


class QueueHub:
    def __init__(self, read: Read, answer: Answer, on_failure: OnFailure = _ignore,
                 watch_s: float = WATCH_S) -> None:
        self._read = read
        self._answer = answer
        self._on_failure = on_failure
        self._watch_s = watch_s
        self._sockets: dict[str, set[QueueSocket]] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._last: dict[str, tuple[Any, ...] | None] = {}
        self.sends = 0  # messages sent (shared or own), for tests and metrics

    def count(self) -> int:
        return sum(len(s) for s in self._sockets.values())

    def watching(self, onsale: str) -> bool:
        return onsale in self._watchers

    async def join(self, onsale: str, ticket: QueueTicket,
                   ws: web.WebSocketResponse) -> QueueSocket:
        """Send the socket its position, then follow the on-sale for it."""
        definition, counters = await self._read(onsale)
        sock = QueueSocket(onsale, ticket, ws)
        if definition is not None:
            await self._send_own(sock, definition, counters)
        self._sockets.setdefault(onsale, set()).add(sock)
        if onsale not in self._watchers:
            self._last[onsale] = change_key(counters)
            self._watchers[onsale] = asyncio.create_task(self._watch(onsale),
                                                         name=f"queue-watch-{onsale}")
        return sock

    async def leave(self, sock: QueueSocket) -> None:
        members = self._sockets.get(sock.onsale)
        if members is None:
            return
        members.discard(sock)
        if not members:
            del self._sockets[sock.onsale]
            self._last.pop(sock.onsale, None)
            watcher = self._watchers.pop(sock.onsale, None)
            if watcher is not None and watcher is not asyncio.current_task():
                await cancel_and_wait([watcher])

    async def _watch(self, onsale: str) -> None:
        while True:
            await asyncio.sleep(self._watch_s)
            if self._watchers.get(onsale) is not asyncio.current_task():
                return  # its last socket left while it was fanning out
            try:
                await self.poll_once(onsale)
            except Exception as exc:  # counted, and read again next round
                log.warning("watching on-sale %s failed: %s", onsale, exc)
                self._on_failure("queue-watch", "unavailable")

    async def poll_once(self, onsale: str) -> bool:
        """One watcher round (also the tests' run-once mode): read the counters and, if
        they moved, fan out. Returns whether it pushed."""
        definition, counters = await self._read(onsale)
        key = change_key(counters)
        if definition is None or counters is None or key == self._last.get(onsale):
            return False
        self._last[onsale] = key
        await self.fan_out(definition, counters)
        return True

    async def fan_out(self, definition: OnSale, counters: Counters) -> None:
        members = list(self._sockets.get(definition.id, ()))
        text = json.dumps(queue_message(definition.id, counters))
        await asyncio.gather(*(self._update(sock, definition, counters, text)
                               for sock in members))

    async def _update(self, sock: QueueSocket, definition: OnSale, counters: Counters,
                      text: str) -> None:
        try:
            if state_of(sock.ticket, counters) != sock.state:
                await self._send_own(sock, definition, counters)
            else:
                await self._send(sock, text)
        except GONE:
            await self._drop(sock)
        except Exception:  # its own position could not be made: again on the next push
            log.exception("pushing the position of %s in %s failed", sock.ticket.user,
                          sock.onsale)
            self._on_failure("queue-push", "error")

    async def _send_own(self, sock: QueueSocket, definition: OnSale,
                        counters: Counters | None) -> None:
        answer = await self._answer(definition, counters, sock.ticket)
        sock.state = state_of(sock.ticket, counters)
        await self._send(sock, json.dumps({"type": "position", **answer}))

    async def _send(self, sock: QueueSocket, text: str) -> None:
        async with asyncio.timeout(SEND_TIMEOUT_S):
            await sock.ws.send_str(text)
        self.sends += 1

    async def _drop(self, sock: QueueSocket) -> None:
        await self.leave(sock)
        with contextlib.suppress(*GONE):
            await sock.ws.close(code=1011, message=b"too slow")

    async def close(self) -> None:
        watchers, self._watchers = list(self._watchers.values()), {}
        await cancel_and_wait(watchers)
        for members in list(self._sockets.values()):
            for sock in list(members):
                with contextlib.suppress(*GONE):
                    await sock.ws.close(code=1001, message=b"node shutting down")
        self._sockets.clear()
