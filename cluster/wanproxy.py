"""WAN links for a one-machine cluster: a TCP proxy that delays, blackholes or resets.

Every region runs on one host here, so a cross-region hop (a node writing to another
region's master, a replica following its master) would cost nothing. This kernel has no
netem and there is no toxiproxy, so each cross-region link goes through this proxy: it
holds every chunk for the link's one-way delay in each direction (a round trip pays twice
the delay), and fault tests can cut a link at runtime: "blackhole" keeps connections open
but forwards nothing, "reset" kills them with an RST and resets new ones at once.

Run as a process: `python -m cluster.wanproxy --config links.json --control-port N`,
with `links.json` = `{"links": [{"name", "listen_host", "listen_port", "target_host",
"target_port", "delay_ms", "mode"}, ...]}`. The control API listens on loopback:
`GET /healthz`, `GET /links`, `POST /links` (every link) and `POST /links/{name}`, each
POST with a JSON body `{"delay_ms"?: int, "mode"?: str}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from aiohttp import web

log = logging.getLogger(__name__)

Mode = Literal["normal", "blackhole", "reset"]
MODES: tuple[Mode, ...] = ("normal", "blackhole", "reset")
MAX_DELAY_MS = 60_000
CHUNK = 64 * 1024
MAX_QUEUED = 4 * 1024 * 1024  # bytes per connection and direction; reading pauses above it
LINK_FIELDS = ("name", "listen_host", "listen_port", "target_host", "target_port",
               "delay_ms", "mode")
REQUIRED_FIELDS = ("name", "listen_port", "target_host", "target_port")


class WanProxyError(Exception):
    """Base of this module's errors."""


class ConfigError(WanProxyError):
    """The links file is unreadable or invalid; the message names file, key and reason."""


class InvalidInput(WanProxyError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}")
        self.field = field
        self.reason = reason


class UnknownLink(WanProxyError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no link named {name!r}")
        self.name = name


def check_delay(value: object, field: str = "delay_ms") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DELAY_MS:
        raise InvalidInput(field, f"must be an integer from 0 to {MAX_DELAY_MS}, not {value!r}")
    return value


def check_mode(value: object, field: str = "mode") -> Mode:
    if value not in MODES:
        raise InvalidInput(field, f"must be one of {', '.join(MODES)}, not {value!r}")
    return cast(Mode, value)


def _check_port(value: object, field: str, lowest: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= 65535:
        raise InvalidInput(field, f"must be a port from {lowest} to 65535, not {value!r}")


@dataclass(frozen=True)
class Link:
    """A link's starting configuration; listen_port 0 takes any free port."""

    name: str  # e.g. "north->south.redis.master"
    listen_host: str
    listen_port: int
    target_host: str
    target_port: int
    delay_ms: int = 0  # one way: each direction pays it
    mode: Mode = "normal"

    def __post_init__(self) -> None:
        for key in ("name", "listen_host", "target_host"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise InvalidInput(key, "must be a non-empty string")
        _check_port(self.listen_port, "listen_port", 0)
        _check_port(self.target_port, "target_port", 1)
        check_delay(self.delay_ms)
        check_mode(self.mode)


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


# --- control API -------------------------------------------------------------------------

PROXIES = web.AppKey("proxies", ProxySet)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, code: str, message: str, **details: Any) -> web.Response:
    return web.json_response({"error": code, "message": message, **details}, status=status)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except UnknownLink as exc:
        return _error(404, "not_found", str(exc), link=exc.name)
    except InvalidInput as exc:
        return _error(422, "invalid_input", str(exc), field=exc.field)
    except web.HTTPNotFound:
        return _error(404, "not_found", f"no route {request.path}")
    except web.HTTPMethodNotAllowed:
        return _error(405, "method_not_allowed", f"{request.method} {request.path}")


async def _change(request: web.Request) -> dict[str, Any]:
    """The body of a POST: `{"delay_ms"?: int, "mode"?: str}`, checked."""
    try:
        body = await request.json()
    except ValueError:
        raise InvalidInput("body", "must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object")
    for key in body:
        if key not in ("delay_ms", "mode"):
            raise InvalidInput(str(key), "is not a setting (delay_ms, mode)")
    if "delay_ms" in body:
        check_delay(body["delay_ms"])
    if "mode" in body:
        check_mode(body["mode"])
    return body


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _list_links(request: web.Request) -> web.Response:
    return web.json_response(request.app[PROXIES].describe())


async def _update_link(request: web.Request) -> web.Response:
    proxies = request.app[PROXIES]
    proxies.link(request.match_info["name"])  # an unknown link is a 404 whatever the body
    described = await proxies.update(request.match_info["name"], **await _change(request))
    return web.json_response(described)


async def _update_all(request: web.Request) -> web.Response:
    proxies = request.app[PROXIES]
    return web.json_response(await proxies.update_all(**await _change(request)))


def control_app(proxies: ProxySet) -> web.Application:
    app = web.Application(middlewares=[_json_errors])
    app[PROXIES] = proxies
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/links", _list_links)
    app.router.add_post("/links", _update_all)
    app.router.add_post("/links/{name}", _update_link)
    return app


# --- process entry point -----------------------------------------------------------------

def load_links(path: Path) -> list[Link]:
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("links"), list):
        raise ConfigError(f"{path}: links: must be a list of links")
    links = [_parse_link(f"{path}: links[{i}]", item) for i, item in enumerate(raw["links"])]
    names = [link.name for link in links]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"{path}: links[{i}].name: {name!r} is not unique")
    return links


def _parse_link(where: str, item: object) -> Link:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: must be an object")
    for key in item:
        if key not in LINK_FIELDS:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(LINK_FIELDS)})")
    for key in REQUIRED_FIELDS:
        if key not in item:
            raise ConfigError(f"{where}.{key}: missing")
    try:
        return Link(**{"listen_host": "127.0.0.1", **item})
    except InvalidInput as exc:
        raise ConfigError(f"{where}.{exc.field}: {exc.reason}") from None


async def serve(links: Sequence[Link], control_host: str, control_port: int) -> None:
    """Run the proxies and the control API until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with ProxySet(links, control_host=control_host,
                            control_port=control_port) as proxies:
            for link in proxies.describe():
                log.info("link %s: %s -> %s, delay %d ms, mode %s", link["name"], link["listen"],
                         link["target"], link["delay_ms"], link["mode"])
            log.info("control API on %s", proxies.control_url)
            await stop.wait()
            totals = [(p.connections_total, p.bytes_forwarded) for p in proxies.links.values()]
        log.info("stopped: %d links, %d connections, %d bytes forwarded", len(totals),
                 sum(t[0] for t in totals), sum(t[1] for t in totals))
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cluster.wanproxy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="the links JSON file")
    parser.add_argument("--control-port", type=int, required=True,
                        help="port of the control API (0: any free port)")
    parser.add_argument("--control-host", default="127.0.0.1")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parse_args(argv)
    try:
        links = load_links(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(links, args.control_host, args.control_port))
    except OSError as exc:  # a port already taken, most likely
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
