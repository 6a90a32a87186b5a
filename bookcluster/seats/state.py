"""The live state of a show's seats as Redis holds it, and how to read it."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from bookcluster.seats import keys


def now_ms() -> int:
    return int(time.time() * 1000)


def parse_hold(value: str) -> tuple[str, int]:
    """A hold entry "<booking_id>|<expires_at_ms>" -> (booking_id, expires_at_ms)."""
    booking_id, _, expires = value.partition("|")
    return booking_id, int(expires)


@dataclass(frozen=True)
class SeatState:
    version: int
    holds: dict[str, tuple[str, int]] = field(default_factory=dict)
    booked: dict[str, str] = field(default_factory=dict)
    blocked: frozenset[str] = frozenset()
    read_at: float = 0.0  # wall-clock seconds when read from Redis

    def status(self, seat_id: str, at_ms: int) -> str:
        if seat_id in self.blocked:
            return "UNAVAILABLE"
        if seat_id in self.booked:
            return "BOOKED"
        hold = self.holds.get(seat_id)
        # A hold past its expiry is free, message or not: nobody waits for a sweep.
        if hold is not None and hold[1] > at_ms:
            return "LOCKED"
        return "AVAILABLE"

    def statuses(self, at_ms: int) -> dict[str, str]:
        """Every seat that is not AVAILABLE at `at_ms`, with its status (the rest of the
        layout is AVAILABLE)."""
        live = {seat for seat, (_, expires) in self.holds.items() if expires > at_ms}
        return {seat: self.status(seat, at_ms)
                for seat in sorted(live | self.booked.keys() | self.blocked)}


def digest(statuses: dict[str, str]) -> str:
    """A short fingerprint of `statuses` (as `SeatState.statuses` gives them), so the
    audit compares a node's cached show with PostgreSQL without shipping every seat."""
    text = "".join(f"{seat}={statuses[seat]}\n" for seat in sorted(statuses))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


async def read_seat_state(client: aioredis.Redis, show_id: int) -> SeatState:
    """One MULTI on `client` (a replica or the master), so the four keys agree."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.get(keys.show_version(show_id))
        pipe.hgetall(keys.show_holds(show_id))
        pipe.hgetall(keys.show_booked(show_id))
        pipe.smembers(keys.show_blocked(show_id))
        version, holds, booked, blocked = await pipe.execute()
    return SeatState(
        version=int(version or 0),
        holds={seat: parse_hold(v) for seat, v in holds.items()},
        booked=dict(booked),
        blocked=frozenset(blocked),
        read_at=time.time(),
    )


async def read_seats(client: aioredis.Redis, show_id: int, seats: list[str]) -> SeatState:
    """`read_seat_state` narrowed to `seats` (one MULTI): the state of those seats only,
    so a reader that knows which seats changed does not read the whole show."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.get(keys.show_version(show_id))
        pipe.hmget(keys.show_holds(show_id), seats)
        pipe.hmget(keys.show_booked(show_id), seats)
        pipe.smismember(keys.show_blocked(show_id), seats)
        version, holds, booked, blocked = await pipe.execute()
    return SeatState(
        version=int(version or 0),
        holds={seat: parse_hold(v) for seat, v in zip(seats, holds, strict=True) if v is not None},
        booked={seat: v for seat, v in zip(seats, booked, strict=True) if v is not None},
        blocked=frozenset(seat for seat, b in zip(seats, blocked, strict=True) if b),
        read_at=time.time(),
    )
