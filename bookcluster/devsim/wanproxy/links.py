"""A WAN link's configuration, its checks, and the proxy's errors."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

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
    return value


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


