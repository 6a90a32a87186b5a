"""The access log: one JSON line per request, on by `settings.access_log` (or a node's
`--access-log`), on the logger `bookcluster.access` (a node's output: its container's
log, or `<run_dir>/logs/<node>.log` in the local cluster).

    {"ts": "2026-12-07T17:20:01.123Z", "method": "POST",
     "route": "/booking/seats/{show_id}/lock", "status": 201, "duration_ms": 12.4,
     "region": "north", "home": "west", "forwarded": "out",
     "booking_id": "...", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}

- `route` is the route's pattern, never the raw path (no query strings, no tokens);
  nothing about the user (no name, no address, no body) is written.
- `forwarded`: "out" when this node sent the write to its home region's node, "in" when
  a peer node forwarded it here, null otherwise; `home` the home region where known.
- `booking_id`: from the route, or from the answer of a hold (its home node names it in
  `X-Bookcluster-Booking-Id`, which a forward passes back).
- `trace_id`: the W3C `traceparent` header's trace id, else a new one; a forward passes
  it on, so the entry node's line and the home node's line share it.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from typing import Any

from aiohttp import web

BOOKING_HEADER = "X-Bookcluster-Booking-Id"
TRACEPARENT = "traceparent"
LOGGER = "bookcluster.access"

TRACE: web.RequestKey[str] = web.RequestKey("trace_id")
FORWARDED_TO: web.RequestKey[str] = web.RequestKey("forwarded_to")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_NO_TRACE = "0" * 32


def trace_id(request: web.Request) -> str:
    """This request's trace id: the caller's (`traceparent`), else a new one."""
    found = request.get(TRACE)
    if found is None:
        match = _TRACEPARENT.fullmatch(request.headers.get(TRACEPARENT, "").strip().lower())
        found = match.group(1) if match and match.group(1) != _NO_TRACE \
            else secrets.token_hex(16)
        request[TRACE] = found
    return found


def traceparent(trace: str) -> str:
    """A `traceparent` header for a call made within trace `trace` (a new span id)."""
    return f"00-{trace}-{secrets.token_hex(8)}-01"


def entry(request: web.Request, route: str, status: int, seconds: float, region: str,
          home: str | None, forwarded_in: bool,
          response: web.StreamResponse | None) -> dict[str, Any]:
    """The fields of one request's line."""
    booking = request.match_info.get("booking_id")
    if booking is None and response is not None:
        booking = response.headers.get(BOOKING_HEADER)
    forwarded = "out" if FORWARDED_TO in request else "in" if forwarded_in else None
    return {"ts": _utc(time.time()), "method": request.method, "route": route,
            "status": status, "duration_ms": round(seconds * 1000, 3), "region": region,
            "home": request.get(FORWARDED_TO, home), "forwarded": forwarded,
            "booking_id": booking, "trace_id": trace_id(request)}


def _utc(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


class AccessLog:
    """Writes the lines when on; costs one attribute check per request when off."""

    def __init__(self, on: bool, logger: logging.Logger | None = None) -> None:
        self.on = on
        self._log = logger or logging.getLogger(LOGGER)

    def write(self, fields: dict[str, Any]) -> None:
        self._log.info(json.dumps(fields, separators=(",", ":")))
