"""Writes for another region's theatres are forwarded to a node of that region.

A hold costs one Redis and one PostgreSQL round trip to the home region, a
confirm one PostgreSQL round trip and one to the gateway; from a node in
another region each of those is a WAN round trip (about 80 ms across India).
Forwarding the HTTP request to a node of the home region makes a remote write
pay one WAN round trip: the home node talks to its own stores over its own
network. Nothing about the rules changes: the home node runs the same hold
and confirm, and the answer comes back byte for byte. (Clients that follow
the X-Bookcluster-Home-Nodes header of any answer about a show or booking
skip this hop: `middlewares.home_middleware`.) If no home node can be
reached, the answer is 503 `region_unavailable`.

The forward waits until the write's deadline (`deadline.py`) and passes it on
(less the margin for the way back), so the home node gives up before its
caller does. Only requests that were never sent are retried on another home
node (a connection refused, or not made in time); a request that may have run
is not repeated, and its 503 says the outcome is unknown.

The home node rate-limits by the client's address, which only the entry node
saw: the forwarder passes it in a header signed with the cluster's
`forward_secret` (HMAC over address, method, path and time), so a client
cannot pick its own address by sending that header itself.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
import time

import aiohttp
from aiohttp import web

from bookcluster import tracing
from bookcluster.booking.passes import ADMISSION_HEADER
from bookcluster.node import requestlog
from bookcluster.node.body import read_body
from bookcluster.stores import deadline
from bookcluster.stores.connections import route_key
from bookcluster.topology.errors import Moved, RegionUnavailable
from bookcluster.topology.model import Endpoint, Topology

log = logging.getLogger(__name__)

FORWARDED_HEADER = "X-Bookcluster-Forwarded"
CLIENT_HEADER = "X-Bookcluster-Client"  # "<address> <unix time> <hmac>"
PASSED_HEADERS = ("Content-Type", "Idempotency-Key", "Authorization", ADMISSION_HEADER)
REPLAYED_HEADER = "Idempotent-Replayed"  # passed back: the answer is a stored one
PASSED_BACK = ("Retry-After", REPLAYED_HEADER, requestlog.BOOKING_HEADER)
SIGNATURE_WINDOW_S = 30.0
# The checked CLIENT_HEADER, kept on the request: routing and the rate limits both ask.
PEER_CLIENT: web.RequestKey[str | None] = web.RequestKey("peer_client")
CONNECT_TIMEOUT_S = 0.5
MOVED_STATUS = 421  # Misdirected Request: the home node's answer to a write it may not do


def _mac(secret: bytes, address: str, at: str, method: str, path_qs: str) -> str:
    text = f"{address} {at} {method} {path_qs}".encode()
    return hmac.new(secret, text, hashlib.sha256).hexdigest()


def client_header(secret: bytes, address: str, method: str, path_qs: str, now: float) -> str:
    """CLIENT_HEADER's value: the entry node vouches for `address` for this one request."""
    at = str(int(now))
    return f"{address} {at} {_mac(secret, address, at, method, path_qs)}"


def vouched_client(secret: bytes, value: str | None, method: str, path_qs: str,
                   now: float) -> str | None:
    """The client address a CLIENT_HEADER `value` vouches for, if a node holding `secret`
    signed it for this method and path within SIGNATURE_WINDOW_S of `now`; else None."""
    if value is None or not value.isascii():  # ours are; other text cannot be MACed as sent
        return None
    address, _, rest = value.partition(" ")
    at, _, mac = rest.partition(" ")
    if not at.isascii() or not at.isdigit() or len(at) > 12 \
            or abs(now - int(at)) > SIGNATURE_WINDOW_S:
        return None
    return address if hmac.compare_digest(_mac(secret, address, at, method, path_qs), mac) \
        else None


class Forwarder:
    """Owns one HTTP client session to the other regions' nodes."""

    def __init__(self, topology: Topology, local_region: str,
                 routes: dict[str, Endpoint] | None = None) -> None:
        self.topology = topology
        self._secret = topology.secrets.get("forward_secret").encode()
        self.local_region = local_region
        self._routes = routes or {}
        self._turn = itertools.count()
        self._session: aiohttp.ClientSession | None = None
        self.forwarded_total = 0

    async def open(self) -> Forwarder:
        # Each forward is bounded by its write's deadline (`forward`), not a session total.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
        self._session = aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60))
        return self

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def needed(self, request: web.Request, home: str) -> bool:
        return home != self.local_region and self._peer_client(request) is None

    def forwarded(self, request: web.Request) -> bool:
        """Whether a peer node forwarded this request to us (it routes any retry)."""
        return self._peer_client(request) is not None

    def client_address(self, request: web.Request) -> str:
        """The address of the client who sent this request, also behind a forward."""
        return self._peer_client(request) or request.remote or "-"

    def _peer_client(self, request: web.Request) -> str | None:
        """The client address a peer node vouched for, or None if not validly forwarded
        (checked once per request: routing and the rate limits both ask)."""
        if PEER_CLIENT in request:
            return request[PEER_CLIENT]
        request[PEER_CLIENT] = found = self._vouched(request)
        return found

    def _vouched(self, request: web.Request) -> str | None:
        if FORWARDED_HEADER not in request.headers:
            return None
        return vouched_client(self._secret, request.headers.get(CLIENT_HEADER),
                             request.method, request.path_qs, time.time())

    async def forward(self, request: web.Request, home: str) -> web.Response:
        """Send the write to a home node and return its answer, by the write's deadline."""
        assert self._session is not None, "Forwarder not opened"
        limit = deadline.current()
        body = await read_body(request)  # bounded in size and time like any body here
        headers = {h: request.headers[h] for h in PASSED_HEADERS if h in request.headers}
        headers[FORWARDED_HEADER] = self.local_region
        headers[deadline.HEADER] = limit.forwarded()
        headers[CLIENT_HEADER] = client_header(self._secret, self.client_address(request),
                                               request.method, request.path_qs, time.time())
        headers[requestlog.TRACEPARENT] = requestlog.traceparent(requestlog.trace_id(request))
        request[requestlog.FORWARDED_TO] = home
        with tracing.span(f"forward {home}", "client", {"bookcluster.home": home}):
            tracing.inject(headers)  # when tracing: this span's traceparent instead
            return await self._send(request, home, body, headers, limit)

    async def _send(self, request: web.Request, home: str, body: bytes,
                    headers: dict[str, str], limit: deadline.Deadline) -> web.Response:
        assert self._session is not None, "Forwarder not opened"
        nodes = self.topology.region(home).nodes
        first = next(self._turn)
        for attempt in range(min(2, len(nodes))):
            node = nodes[(first + attempt) % len(nodes)]
            via = self._routes.get(route_key(self.local_region, node), node)
            url = f"http://{via.host}:{via.port}{request.path_qs}"
            # A request's own timeout replaces the session's, so it repeats sock_connect.
            timeout = aiohttp.ClientTimeout(total=limit.left_for(home, f"home node {node}"),
                                            sock_connect=CONNECT_TIMEOUT_S)
            try:
                async with self._session.request(request.method, url, data=body,
                                                 headers=headers, timeout=timeout) as resp:
                    payload = await resp.read()
                    self.forwarded_total += 1
                    if resp.status == MOVED_STATUS:  # nothing done: our map is stale
                        moved = json.loads(payload)
                        raise Moved(moved.get("region"), int(moved.get("epoch") or 0))
                    passed = {h: resp.headers[h] for h in PASSED_BACK if h in resp.headers}
                    return web.Response(body=payload, status=resp.status,
                                        content_type=resp.content_type, headers=passed)
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # Never sent (refused, or not connected in time): another node may take it.
                log.warning("home node %s of %s unreachable: %s", node, home, exc)
            except (aiohttp.ClientError, TimeoutError) as exc:  # may have run: do not repeat
                raise RegionUnavailable(home, f"home node {node} ({type(exc).__name__})",
                                        outcome="unknown") from exc
        raise RegionUnavailable(home, "every home node tried")
