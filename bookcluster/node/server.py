"""The node's HTTP server: how much a client may send, and how long it may take.

aiohttp's server has no deadline of its own for a request's headers: a client
that sends one byte every few seconds (slowloris) keeps its connection, file
descriptor and parse buffer until the keep-alive timeout (75 s) drops it as
idle; 800 such clients were all still connected after 40 s. Here a
connection must finish a request's headers within `header_timeout` of
connecting or of the first byte of that request, else it is closed. A body
then has `body_timeout` (`body.py`: 408). An idle keep-alive connection
between requests is not a slow client: it keeps `KEEPALIVE_TIMEOUT_S`, longer
than the forwarder's 60 s pool, so the client side hangs up first and never
sends into a closing connection.

Header sizes are bounded explicitly; a longer line or field, more fields, or
any other HTTP aiohttp's parser refuses is a JSON 400 `malformed_request`,
answered before any handler runs and logged without a traceback (a fuzzer
sends thousands).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_request import BaseRequest

from bookcluster.node.answers import answer
from bookcluster.node.settings import NodeSettings

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 8 * 1024  # the request line, and each header line
MAX_FIELD_BYTES = 8 * 1024  # one header's value
MAX_HEADERS = 64
KEEPALIVE_TIMEOUT_S = 75.0
SHUTDOWN_TIMEOUT_S = 5.0  # requests in flight at SIGTERM get this long to finish


class NodeProtocol(web.RequestHandler):
    """aiohttp's connection protocol with a timer on request headers.

    Armed when a connection opens and when the first bytes of a request arrive
    (no body is still arriving, so new bytes start the next request); disarmed
    once aiohttp has parsed that request's headers.
    """

    __slots__ = ("_header_timeout", "_header_timer", "_last_body")

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._last_body: StreamReader | None = None  # of the newest parsed request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self._awaiting_headers():
            self._arm()
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:  # headers complete (or refused: aiohttp says 400)
            self._last_body = self._messages[-1][1]
            self._disarm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _awaiting_headers(self) -> bool:
        return not self._upgraded and (self._last_body is None or self._last_body.is_eof())

    def _arm(self) -> None:
        self._header_timer = self._loop.call_later(self._header_timeout, self._headers_overdue)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_overdue(self) -> None:
        self._header_timer = None
        if self._request_in_progress:
            self.close()  # an earlier pipelined request is being answered: finish it first
        else:
            self.force_close()

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError) or status >= 500:
            return super().handle_error(request, status, exc, message)
        log.debug("malformed request from %s: %s", request.remote, exc.message[:200])
        response = answer(
            {"error": "malformed_request", "message": f"malformed HTTP: {exc.message[:200]}"},
            status=status)
        response.force_close()  # the parser's state is unknown: no next request on it
        return response


class _Server(web.Server):
    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout

    def __call__(self) -> web.RequestHandler:
        return NodeProtocol(self, header_timeout=self._header_timeout, loop=self._loop,
                              **self._kwargs)


class _Runner(web.AppRunner):
    """An AppRunner whose connections are `NodeProtocol`s (aiohttp has no option for it)."""

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's start-up
        return _Server(plain.request_handler, request_factory=plain.request_factory,
                       handler_cancellation=plain.handler_cancellation,
                       loop=asyncio.get_running_loop(), header_timeout=self._header_timeout,
                       **plain._kwargs)


async def serve(app: web.Application, settings: NodeSettings) -> None:
    """Serves `app` until SIGTERM or SIGINT, then shuts down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = _Runner(app, header_timeout=settings.header_timeout_s, access_log=None,
                     shutdown_timeout=SHUTDOWN_TIMEOUT_S, keepalive_timeout=KEEPALIVE_TIMEOUT_S,
                     max_line_size=MAX_LINE_BYTES, max_field_size=MAX_FIELD_BYTES,
                     max_headers=MAX_HEADERS)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        await stop.wait()
    finally:
        await runner.cleanup()
