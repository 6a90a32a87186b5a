"""The topology model: the operator's map as frozen dataclasses.

`topology.load` reads and validates `topology.yaml` into these; everything below
the entry point receives them as arguments and never changes them.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bookcluster.topology.secrets import Secrets, cluster_secrets

DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Region:
    name: str
    redis_master: Endpoint
    # Replicas hosted in this region, keyed by the region whose master they copy.
    redis_replicas: Mapping[str, Endpoint]
    pg_primary: Endpoint
    pg_standby: Endpoint | None
    nodes: tuple[Endpoint, ...]
    # The region's job worker (jobs from the outbox, expiry sweeper);
    # the address serves its /healthz and /metrics.
    worker: Endpoint | None = None
    # Patroni: the REST API of each PostgreSQL member (in `pg_members` order), and the
    # region's etcd (Patroni's DCS): its client address, then its peer address.
    pg_api: tuple[Endpoint, ...] = ()
    pg_etcd: tuple[Endpoint, ...] = ()
    # The region's Redis Sentinel: with the other regions' sentinels it watches every
    # region's master and promotes the master's replica in its own region.
    redis_sentinel: Endpoint | None = None

    @property
    def pg_members(self) -> tuple[Endpoint, ...]:
        """The region's PostgreSQL servers. `primary` is only the first leader: under
        Patroni either member may be the primary now (see `bookcluster.stores.connections`)."""
        return (self.pg_primary,) if self.pg_standby is None else (self.pg_primary,
                                                                   self.pg_standby)

    def endpoints(self) -> list[tuple[str, Endpoint]]:
        """Every listening address of this region with a label, for duplicate checks."""
        found = [("redis.master", self.redis_master), ("postgres.primary", self.pg_primary)]
        found += [(f"redis.replicas.{src}", ep) for src, ep in self.redis_replicas.items()]
        if self.redis_sentinel is not None:
            found.append(("redis.sentinel", self.redis_sentinel))
        if self.pg_standby is not None:
            found.append(("postgres.standby", self.pg_standby))
        found += [(f"postgres.patroni[{i}]", ep) for i, ep in enumerate(self.pg_api)]
        found += [(f"postgres.etcd[{i}]", ep) for i, ep in enumerate(self.pg_etcd)]
        found += [(f"nodes[{i}]", ep) for i, ep in enumerate(self.nodes)]
        if self.worker is not None:
            found.append(("worker", self.worker))
        return found


@dataclass(frozen=True)
class Settings:
    run_dir: Path
    hold_ttl_s: float = 600.0
    max_hold_s: float = 1800.0
    max_seats_per_booking: int = 10
    sweep_interval_s: float = 5.0
    # fsync on PostgreSQL (and Redis persistence); tests turn it off for speed. Commits
    # wait for the synchronous standby either way (`bookcluster/local/postgres_server.py`).
    durable: bool = True
    # Sentinel fails over a Redis master that has not answered for this long.
    redis_down_after_s: float = 1.0
    # The demo catalog's first show day. Unset, it is the day a fresh cluster is seeded;
    # regions started on separate hosts set it, so every region seeds the same shows.
    catalog_start: date | None = None
    # On-sales: the most users a home region admits from a queue a second, however much
    # headroom it measures (`bookcluster/booking/admitter.py`).
    onsale_admit_ceiling: float = 50.0
    # Check-in at the door: a show's tickets are scanned from this long before its start
    # until this long after it (a long film and its exit scans fit in the second).
    checkin_opens_before_s: float = 7200.0
    checkin_closes_after_s: float = 5 * 3600.0
    # Refunds of a confirmed booking close this long before its show starts (0: at the
    # start; negative: that long after it, as the test cluster's shows seeded today need).
    refund_closes_before_s: float = 0.0
    # Mails: besides the region's outbox folder, sent through this SMTP relay (host:port)
    # when set (`bookcluster/worker/jobs/notifications.py`).
    smtp_relay: Endpoint | None = None
    # One JSON line per request on every node's log (`bookcluster/node/requestlog.py`).
    access_log: bool = False

    def catalog_day_one(self) -> date:
        return self.catalog_start or date.today()


@dataclass(frozen=True)
class Payments:
    """The payment gateway (a simulator locally) and how its webhooks are trusted.
    Its secrets (webhook HMAC key, merchant API key) live in `Topology.secrets`."""

    gateway: Endpoint
    replay_window_s: float = 300.0
    capture_delay_s: float = 1.0  # simulator: how long until a payment is captured
    fail_share: float = 0.0  # simulator: share of payments that fail


@dataclass(frozen=True)
class Auth:
    """How user tokens (JWT) are verified. HS256 uses the `jwt_secret` secret (or
    `secret_file`); RS256/ES256 verify with the identity provider's public key."""

    algorithm: str = "HS256"
    secret_file: Path | None = None
    public_key_file: Path | None = None
    issuer: str | None = None
    audience: str | None = None


@dataclass(frozen=True)
class Rate:
    """A token bucket: `per_s` tokens a second, at most `burst` saved up."""

    per_s: float
    burst: int


@dataclass(frozen=True)
class Limits:
    """Abuse limits. Caps are per user (or client address) in a home region; rates are
    token buckets."""

    seats_per_show: int = 10  # seats one user may hold at once in one show
    holds_per_user: int = 4  # active holds of one user in one home region
    seats_per_show_per_address: int = 60  # seats one client address may hold in one show
    holds_per_address: int = 200  # active holds of one client address in one home region
    user_writes_at_once: int = 16  # writes of one user running or waiting on one node
    user_writes: Rate = Rate(10.0, 30)  # per user, in the home region's Redis
    ip_writes: Rate = Rate(2000.0, 4000)  # per client IP, in the home region's Redis
    ip_reads: Rate = Rate(5000.0, 10000)  # per client IP, in each node's memory
    user_reads: Rate = Rate(20.0, 60)  # per user (token routes), in each node's memory
    # Requests with a missing, invalid or expired token and webhooks with a missing or
    # bad signature, per client IP, in each node's memory.
    ip_rejects: Rate = Rate(20.0, 200)


@dataclass(frozen=True)
class Topology:
    path: Path
    epoch: int
    settings: Settings
    regions: Mapping[str, Region]
    theatres: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    payments: Payments | None = None
    auth: Auth = Auth()
    limits: Limits = Limits()

    @property
    def secrets(self) -> Secrets:
        """Passwords and keys of this cluster (env, secret files, or the run folder)."""
        return cluster_secrets(self.settings.run_dir)

    def region(self, name: str) -> Region:
        return self.regions[name]

    def sentinels(self, first: str | None = None) -> list[Endpoint]:
        """Every region's Redis Sentinel, region `first`'s (the caller's own) first."""
        order = sorted(self.regions.values(), key=lambda r: r.name != first)
        return [r.redis_sentinel for r in order if r.redis_sentinel is not None]

    def with_settings(self, **changes: Any) -> Topology:
        return replace(self, settings=replace(self.settings, **changes))


def parse_duration(text: str) -> float:
    """'600s', '5s', '250ms', '30m' -> seconds. Raises ValueError."""
    match = DURATION.match(str(text).strip())
    if not match:
        raise ValueError(f"expected a duration like 600s, 250ms or 30m, got {text!r}")
    return float(match.group(1)) * DURATION_UNITS[match.group(2)]


def duration_arg(text: str) -> float:
    """`parse_duration` as an argparse type: a bad value is a usage error, not a traceback."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
