"""Errors of the routing layer: a bad topology file, or a region we cannot reach."""

from __future__ import annotations


class RouterError(Exception):
    """Base of every error raised by `router`."""


class TopologyError(RouterError):
    """The topology file is unusable; names the file, the key path and why."""

    def __init__(self, file: str, key: str, reason: str, line: int | None = None) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        self.line = line
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {key or '<root>'}: {reason}")


class RoutingError(RouterError):
    """A request cannot be routed to the region that owns its data."""


class RegionUnavailable(RoutingError):
    """The home region's Redis master or PostgreSQL primary did not answer in time."""

    # Seconds a client should wait before retrying (HTTP Retry-After). A failover takes
    # about 20 s; a retry every second finds the new primary soon after, and a refused
    # write is cheap: it fails fast and changes nothing.
    RETRY_AFTER_S = 1

    def __init__(self, region: str, component: str) -> None:
        self.region = region
        self.component = component
        super().__init__(f"region {region!r}: {component} unavailable")
