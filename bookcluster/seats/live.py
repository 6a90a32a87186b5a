"""Live seat updates over WebSockets: sockets tracked per show in this node's memory.

A client first gets a snapshot (the full map with its version), then one
delta per change with consecutive versions. Deltas that arrive while a
snapshot is being prepared are buffered and replayed after it. If a socket
would see a gap, it gets a fresh snapshot instead; clients that detect a gap
themselves send {"type": "resync"}. Fan-out comes from the node's one
connection per region (a show with sockets stays subscribed: `on_idle` says
when its last socket left), never one Redis subscription per socket.

Work the hub starts by itself (a re-sync, closing a socket that is too slow) runs in
tasks it owns: `close` cancels and awaits them. Such work that fails is logged and
counted (`on_failure(what, why)`), and a socket whose re-sync failed is closed (1011),
not left buffering deltas it will never be sent: its client reconnects and starts over.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bookcluster.topology.errors import RegionUnavailable

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 1.0  # a socket that cannot take a delta this fast is closed
DELTA_FIELDS = ("version", "seats", "status", "expires_at", "ts")

Snapshot = Callable[[int], Awaitable[dict[str, Any]]]
# what failed ("resync", "close"), why ("gone": the socket went away; "unavailable": the
# show's stores could not be read; "error": anything else, logged with its traceback)
OnFailure = Callable[[str, str], None]
# How a WebSocket that went away shows itself in aiohttp (a send or close on it).
GONE = (ConnectionError, TimeoutError, RuntimeError)


def _ignore(what: str, why: str) -> None:
    pass


@dataclass(eq=False)
class LiveSocket:
    show_id: int
    ws: web.WebSocketResponse
    version: int = -1  # last version this socket has seen; -1 until its snapshot
    buffer: list[dict[str, Any]] = field(default_factory=list)
    syncing: bool = True


class LiveHub:
    def __init__(self, snapshot: Snapshot, on_failure: OnFailure = _ignore) -> None:
        self._snapshot = snapshot
        self._on_failure = on_failure
        self._sockets: dict[int, set[LiveSocket]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_idle: Callable[[int], None] = lambda show_id: None

    def count(self) -> int:
        return sum(len(s) for s in self._sockets.values())

    def watching(self, show_id: int) -> bool:
        return show_id in self._sockets

    def join(self, show_id: int, ws: web.WebSocketResponse) -> LiveSocket:
        sock = LiveSocket(show_id, ws)
        self._sockets.setdefault(show_id, set()).add(sock)
        return sock

    def leave(self, sock: LiveSocket) -> None:
        members = self._sockets.get(sock.show_id)
        if members is not None:
            members.discard(sock)
            if not members:
                del self._sockets[sock.show_id]
                self.on_idle(sock.show_id)

    async def sync(self, sock: LiveSocket) -> None:
        """Send a snapshot, then whatever changed while it was being made."""
        sock.syncing = True
        sock.buffer.clear()
        snapshot = await self._snapshot(sock.show_id)
        await sock.ws.send_str(json.dumps({"type": "snapshot", **snapshot}))
        sock.version = int(snapshot["version"])
        pending, sock.buffer = sorted(sock.buffer, key=lambda m: m["version"]), []
        sock.syncing = False
        for message in pending:
            if not await self._deliver(sock, message):
                return

    async def publish(self, message: dict[str, Any]) -> None:
        members = self._sockets.get(int(message["show"]))
        if not members:
            return
        # Seat statuses only: never who holds or bought them (a booking id in a
        # delta let anyone cancel every hold the moment it appeared).
        delta = {"type": "delta", "show_id": int(message["show"]),
                 **{k: message[k] for k in DELTA_FIELDS if k in message}}
        ready = []
        for sock in list(members):
            if sock.syncing:
                sock.buffer.append(delta)
            else:
                ready.append(sock)
        text = json.dumps(delta)
        await asyncio.gather(*(self._send(sock, delta, text) for sock in ready))

    async def _deliver(self, sock: LiveSocket, delta: dict[str, Any]) -> bool:
        return await self._send(sock, delta, json.dumps(delta))

    async def _send(self, sock: LiveSocket, delta: dict[str, Any], text: str) -> bool:
        version = int(delta["version"])
        if version <= sock.version:
            return True
        if version != sock.version + 1:  # it missed one: start it over
            self._spawn("resync", sock, self.sync(sock))
            return False
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await sock.ws.send_str(text)
        except GONE:
            self.leave(sock)
            self._spawn("close", sock, sock.ws.close(code=1011, message=b"too slow"))
            return False
        sock.version = version
        return True

    def resync(self, show_id: int) -> None:
        for sock in list(self._sockets.get(show_id, ())):
            self._spawn("resync", sock, self.sync(sock))

    def _spawn(self, what: str, sock: LiveSocket, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(self._run(what, sock, work),
                                   name=f"live-{what}-{sock.show_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, what: str, sock: LiveSocket, work: Coroutine[Any, Any, Any]) -> None:
        try:
            await work
        except GONE as exc:
            log.debug("live %s of a socket of show %d: it went away (%s)", what,
                      sock.show_id, exc)
            self._on_failure(what, "gone")
        except RegionUnavailable as exc:  # an outage, not a bug: no traceback
            log.warning("live %s of a socket of show %d: %s; closing the socket", what,
                        sock.show_id, exc)
            self._on_failure(what, "unavailable")
        except Exception:
            log.exception("live %s of a socket of show %d failed; closing the socket", what,
                          sock.show_id)
            self._on_failure(what, "error")
        else:
            return
        if what == "resync":  # it would buffer deltas forever: let its client start over
            self.leave(sock)
            try:
                await sock.ws.close(code=1011, message=b"resync failed")
            except GONE:
                pass  # already gone: nothing to close

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for members in list(self._sockets.values()):
            for sock in list(members):
                await sock.ws.close(code=1001, message=b"node shutting down")
        self._sockets.clear()
