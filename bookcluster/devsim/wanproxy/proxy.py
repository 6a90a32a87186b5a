"""The proxy itself: per-connection pipes that hold bytes for the link's delay,
and the set of links one process owns."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from bookcluster.devsim.wanproxy.control import control_app
from bookcluster.devsim.wanproxy.links import (
    CHUNK,
    MAX_QUEUED,
    InvalidInput,
    Link,
    Mode,
    UnknownLink,
    check_delay,
    check_mode,
)

log = logging.getLogger(__name__)

def _reset(writer: asyncio.StreamWriter) -> None:
    """Close abruptly: SO_LINGER 0 makes close() send an RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass  # already closed by the peer
    writer.transport.abort()


class _Pipe:
    """One direction of a connection: a reader queues chunks, a writer sends each when due."""

    def __init__(self, link: LinkProxy, src: asyncio.StreamReader,
                 dst: asyncio.StreamWriter) -> None:
        self._link = link
        self._src = src
        self._dst = dst
        self._queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()  # b"": EOF
        self._queued = 0
        self._room = asyncio.Event()
        self._room.set()

    async def read(self) -> None:
        while True:
            await self._room.wait()
            data = await self._src.read(CHUNK)
            # The delay is fixed on arrival, so a change applies to new data at once; the
            # queue keeps byte order even when a shorter delay makes a later chunk due first.
            self._queue.put_nowait((time.monotonic() + self._link.delay_ms / 1000, data))
            if not data:
                return
            self._queued += len(data)
            if self._queued >= MAX_QUEUED:
                self._room.clear()

    async def write(self) -> None:
        while True:
            due, data = await self._queue.get()
            # time.monotonic, not loop.time: uvloop's clock is cached in whole ms, and a
            # timer may fire early; the link must never be faster than its delay.
            while (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            await self._link.flowing.wait()
            if not data:
                if self._dst.can_write_eof():
                    self._dst.write_eof()
                return
            self._dst.write(data)
            await self._dst.drain()
            self._link.bytes_forwarded += len(data)
            self._queued -= len(data)
            if self._queued < MAX_QUEUED:
                self._room.set()


class _Connection:
    """A client connection and its upstream twin; ends when both directions ended."""

    def __init__(self, link: LinkProxy, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self._link = link
        self._client = (reader, writer)
        self._upstream: asyncio.StreamWriter | None = None
        self.rst = False  # set before cancelling: close with an RST

    async def run(self) -> None:
        ended = False
        try:
            await self._link.flowing.wait()  # blackhole: accepted, then nothing happens
            reader, self._upstream = await asyncio.open_connection(
                self._link.link.target_host, self._link.link.target_port)
            await self._pump(reader, self._upstream)
            ended = True
        except* OSError as errors:
            log.debug("link %s: connection ended: %s", self._link.name, errors.exceptions[0])
        finally:
            self._close(graceful=ended)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pipes = (_Pipe(self._link, self._client[0], writer),
                 _Pipe(self._link, reader, self._client[1]))
        async with asyncio.TaskGroup() as group:
            for pipe in pipes:
                group.create_task(pipe.read())
                group.create_task(pipe.write())

    def _close(self, *, graceful: bool) -> None:
        for writer in (self._client[1], self._upstream):
            if writer is None:
                continue
            if self.rst:
                _reset(writer)
            elif graceful:
                writer.close()  # flushes what is still buffered
            else:
                writer.transport.abort()


class LinkProxy:
    """One link at runtime: its listening server, live settings and open connections."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.delay_ms = link.delay_ms
        self.mode: Mode = link.mode
        self.flowing = asyncio.Event()  # set while mode is "normal"
        self.bytes_forwarded = 0
        self.connections_total = 0
        self._server: asyncio.Server | None = None
        self._tasks: dict[asyncio.Task[None], _Connection] = {}
        self._apply_mode()

    @property
    def name(self) -> str:
        return self.link.name

    @property
    def listen_port(self) -> int:
        """The bound port (differs from the config's when that is 0)."""
        if self._server is None or not self._server.sockets:
            return self.link.listen_port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def open_connections(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.link.listen_host, self.link.listen_port)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, not a coroutine: asyncio would run that as a task we do not own.
        self.connections_total += 1
        if self.mode == "reset":
            _reset(writer)
            return
        conn = _Connection(self, reader, writer)
        task = asyncio.get_running_loop().create_task(conn.run(), name=f"wanproxy {self.name}")
        self._tasks[task] = conn
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("link %s: connection failed", self.name, exc_info=exc)

    def _apply_mode(self) -> None:
        if self.mode == "normal":
            self.flowing.set()
        else:
            self.flowing.clear()

    async def update(self, *, delay_ms: int | None = None, mode: str | None = None) -> None:
        """Apply new settings; "reset" has closed every open connection when this returns."""
        checked_delay = None if delay_ms is None else check_delay(delay_ms)
        checked_mode = None if mode is None else check_mode(mode)
        if checked_delay is not None:
            self.delay_ms = checked_delay
        if checked_mode is not None:
            self.mode = checked_mode
            self._apply_mode()
            if checked_mode == "reset":
                await self._drop_all(rst=True)
        log.info("link %s: delay %d ms, mode %s", self.name, self.delay_ms, self.mode)

    async def _drop_all(self, *, rst: bool) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            self._tasks[task].rst = rst
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await asyncio.sleep(0)  # let connections accepted just before run their callback
        await self._drop_all(rst=False)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": f"{self.link.listen_host}:{self.listen_port}",
            "target": f"{self.link.target_host}:{self.link.target_port}",
            "delay_ms": self.delay_ms,
            "mode": self.mode,
            "open_connections": self.open_connections,
            "connections_total": self.connections_total,
            "bytes_forwarded": self.bytes_forwarded,
        }


class ProxySet:
    """Every link's proxy and (with control_port) the control API, opened and closed together."""

    def __init__(self, links: Iterable[Link], *, control_host: str = "127.0.0.1",
                 control_port: int | None = None) -> None:
        self.links: dict[str, LinkProxy] = {}
        for link in links:
            if link.name in self.links:
                raise InvalidInput("name", f"is not unique: {link.name!r}")
            self.links[link.name] = LinkProxy(link)
        self._control_host = control_host
        self._control_port = control_port
        self._runner: web.AppRunner | None = None
        self._closed = False

    async def __aenter__(self) -> ProxySet:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        try:
            for proxy in self.links.values():
                await proxy.start()
            if self._control_port is not None:
                await self._start_control(self._control_host, self._control_port)
        except BaseException:
            await self.close()
            raise

    async def _start_control(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(control_app(self), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    @property
    def control_url(self) -> str | None:
        if self._runner is None or not self._runner.addresses:
            return None
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def link(self, name: str) -> LinkProxy:
        try:
            return self.links[name]
        except KeyError:
            raise UnknownLink(name) from None

    async def update(self, name: str, *, delay_ms: int | None = None,
                     mode: str | None = None) -> dict[str, Any]:
        proxy = self.link(name)
        await proxy.update(delay_ms=delay_ms, mode=mode)
        return proxy.describe()

    async def update_all(self, *, delay_ms: int | None = None,
                         mode: str | None = None) -> list[dict[str, Any]]:
        # Check once up front so a bad value changes no link rather than some.
        delay_ms = None if delay_ms is None else check_delay(delay_ms)
        mode = None if mode is None else check_mode(mode)
        for proxy in self.links.values():
            await proxy.update(delay_ms=delay_ms, mode=mode)
        return self.describe()

    def describe(self) -> list[dict[str, Any]]:
        return [proxy.describe() for proxy in self.links.values()]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._runner is not None:
            await self._runner.cleanup()
        for proxy in self.links.values():
            await proxy.close()


