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
    """The home region's Redis master or PostgreSQL primary did not answer in time.

    `outcome` is what the caller can rely on: "not_applied" (nothing changed) or
    "unknown" (the write was sent and may still take effect: a retry with the same
    Idempotency-Key learns which). `known` adds facts, e.g. when a hold that may
    have been made lapses (`lapses_by`)."""

    # Seconds a client should wait before retrying (HTTP Retry-After). A failover takes
    # about 20 s; a retry every second finds the new primary soon after, and a refused
    # write is cheap: it fails fast and changes nothing.
    RETRY_AFTER_S = 1

    def __init__(self, region: str, component: str, *, outcome: str = "not_applied",
                 **known: str) -> None:
        self.region = region
        self.component = component
        self.outcome = outcome
        self.known = known
        super().__init__(f"region {region!r}: {component} unavailable")

    def unknown(self, **known: str) -> RegionUnavailable:
        """The same outage, for a write that may have taken effect."""
        return RegionUnavailable(self.region, self.component, outcome="unknown",
                                 **{**self.known, **known})


class Moved(RoutingError):
    """The theatre is not this region's to write at the caller's epoch: it moved to
    `region` at `epoch` (a move flipped it), or this region owns it only since an
    epoch newer than the caller's map. `region` None: the answering region owns it
    (the caller's map is merely older) or does not know the owner. The caller
    reloads its topology and routes the write again (`bookcluster/node/access.py`)."""

    RETRY_AFTER_S = 1

    def __init__(self, region: str | None, epoch: int, theatre: str | None = None) -> None:
        self.region = region
        self.epoch = epoch
        self.theatre = theatre
        where = f"region {region!r}" if region else "another epoch"
        super().__init__(f"theatre {theatre or '?'} moved: {where} at epoch {epoch}")
