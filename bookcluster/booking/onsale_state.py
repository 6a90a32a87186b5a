"""An on-sale's definition and its queue's counters as its home master publishes them.

PostgreSQL decides (`0017_onsales.sql`); the home region's admitter (`admitter.py`)
copies each round what nodes need to answer positions into the home master, which
replicates to every region: the definition (`keys.ONSALES`), the counters
(`keys.onsale_state`) and the frontier's steps (`keys.onsale_steps`). A node answers a
position from its own region's replica of that master: reads stay home.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from bookcluster.seats import keys

ONSALE_ID = re.compile(r"^os([1-9][0-9]{0,17})-[0-9a-f]{8}$")


@dataclass(frozen=True)
class OnSale:
    id: str
    shows: tuple[int, ...]
    opens_at: datetime
    sale_at: datetime
    window_s: int
    max_party: int
    region: str

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "shows": list(self.shows), "opens_at": self.opens_at.isoformat(),
                "sale_at": self.sale_at.isoformat(), "window_s": self.window_s,
                "max_party": self.max_party, "region": self.region,
                "join_url": f"/onsales/{self.id}/join"}

    @classmethod
    def from_json(cls, text: str) -> OnSale:
        d = json.loads(text)
        return cls(d["id"], tuple(d["shows"]), datetime.fromisoformat(d["opens_at"]),
                   datetime.fromisoformat(d["sale_at"]), d["window_s"], d["max_party"],
                   d["region"])

    @classmethod
    def from_row(cls, row: asyncpg.Record, region: str) -> OnSale:
        return cls(row["id"], tuple(row["show_ids"]), row["opens_at"], row["sale_at"],
                   row["window_s"], row["max_party"], region)


@dataclass(frozen=True)
class Counters:
    """The queue as last published: None fields are not known yet (before the seal)."""

    seed: int | None
    n_early: int | None
    joined: int
    frontier: int
    sold_out: bool
    rate_per_s: float
    at_ms: int  # when the admitter published it (the master's clock)
    # The admitted users' waits (s; None: nobody admitted yet) and how many abandoned
    # (`queue_waits.py`).
    wait_p50_s: float | None = None
    wait_p99_s: float | None = None
    abandoned: int = 0

    def fields(self) -> dict[Any, Any]:
        return {"seed": "" if self.seed is None else str(self.seed),
                "n_early": "" if self.n_early is None else str(self.n_early),
                "joined": str(self.joined), "frontier": str(self.frontier),
                "sold_out": "1" if self.sold_out else "0", "rate": f"{self.rate_per_s:.3f}",
                "at_ms": str(self.at_ms), "wait_p50": _seconds(self.wait_p50_s),
                "wait_p99": _seconds(self.wait_p99_s), "abandoned": str(self.abandoned)}

    @classmethod
    def parse(cls, raw: dict[str, str]) -> Counters | None:
        if not raw:
            return None
        return cls(int(raw["seed"]) if raw.get("seed") else None,
                   int(raw["n_early"]) if raw.get("n_early") else None,
                   int(raw.get("joined") or 0), int(raw.get("frontier") or 0),
                   raw.get("sold_out") == "1", float(raw.get("rate") or 0.0),
                   int(raw.get("at_ms") or 0),
                   float(raw["wait_p50"]) if raw.get("wait_p50") else None,
                   float(raw["wait_p99"]) if raw.get("wait_p99") else None,
                   int(raw.get("abandoned") or 0))


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


async def publish_definition(client: aioredis.Redis, onsale: OnSale) -> None:
    await client.hset(keys.ONSALES, onsale.id, json.dumps(onsale.as_json()))


async def publish(client: aioredis.Redis, onsale: OnSale, counters: Counters,
                  steps: list[tuple[int, int]] | None) -> None:
    """Write the definition and counters; `steps` (frontier, at_ms), all of them, when the
    master's copy is missing some (the caller compares counts), else None."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.hset(keys.ONSALES, onsale.id, json.dumps(onsale.as_json()))
        pipe.hset(keys.onsale_state(onsale.id), mapping=counters.fields())
        if steps is not None:
            pipe.delete(keys.onsale_steps(onsale.id))
            if steps:
                pipe.zadd(keys.onsale_steps(onsale.id),
                          {f"{f}:{at}": f for f, at in steps})
        await pipe.execute()


async def stored_steps(conn: asyncpg.Connection, onsale_id: str) -> list[tuple[int, int]]:
    """Every admission step PostgreSQL recorded: (frontier, at_ms), in order."""
    return [(int(r["frontier"]), int(r["at"].timestamp() * 1000)) for r in
            await conn.fetch("SELECT frontier, at FROM onsale_admit WHERE onsale_id = $1 "
                             "ORDER BY frontier", onsale_id)]


async def publish_stored(conn: asyncpg.Connection, client: aioredis.Redis, onsale_id: str,
                         region: str) -> None:
    """Copy an on-sale as PostgreSQL has it into `region`'s master, all steps included
    (a theatre move, before its new home answers positions). The rate is not known
    until the region's admitter sets it (within a round): 0 here."""
    row = await conn.fetchrow("SELECT * FROM onsale WHERE id = $1", onsale_id)
    if row is None:
        return
    counters = Counters(row["seed"], row["n_early"], int(row["next_seq"]),
                        int(row["frontier"]), row["sold_out"], 0.0, now_ms())
    await publish(client, OnSale.from_row(row, region), counters,
                  await stored_steps(conn, onsale_id))


async def forget(client: aioredis.Redis, onsale_id: str) -> None:
    """Drop an on-sale from a master that is no longer its home (a theatre move)."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.hdel(keys.ONSALES, onsale_id)
        pipe.delete(keys.onsale_state(onsale_id), keys.onsale_steps(onsale_id))
        await pipe.execute()


async def add_step(client: aioredis.Redis, onsale_id: str, frontier: int, at_ms: int) -> None:
    await client.zadd(keys.onsale_steps(onsale_id), {f"{frontier}:{at_ms}": frontier})


async def step_count(client: aioredis.Redis, onsale_id: str) -> int:
    return int(await client.zcard(keys.onsale_steps(onsale_id)))


async def read_all(client: aioredis.Redis) -> list[OnSale]:
    raw: dict[Any, Any] = await client.hgetall(keys.ONSALES)
    return [OnSale.from_json(str(v)) for v in raw.values()]


async def read_counters(client: aioredis.Redis, onsale_ids: list[str]
                        ) -> dict[str, Counters | None]:
    async with client.pipeline(transaction=False) as pipe:
        for onsale_id in onsale_ids:
            pipe.hgetall(keys.onsale_state(onsale_id))
        found = await pipe.execute()
    return {i: Counters.parse(raw or {}) for i, raw in zip(onsale_ids, found, strict=True)}


async def read(client: aioredis.Redis, onsale_id: str) -> tuple[OnSale | None, Counters | None]:
    async with client.pipeline(transaction=False) as pipe:
        pipe.hget(keys.ONSALES, onsale_id)
        pipe.hgetall(keys.onsale_state(onsale_id))
        definition, counters = await pipe.execute()
    return (OnSale.from_json(definition) if definition else None,
            Counters.parse(counters or {}))


async def admitted_at_ms(client: aioredis.Redis, onsale_id: str, place: int) -> int | None:
    """When the frontier first passed `place` (None: not yet, as far as published)."""
    found: list[Any] = await client.zrangebyscore(keys.onsale_steps(onsale_id),
                                                  f"({place}", "+inf", start=0, num=1)
    return int(str(found[0]).partition(":")[2]) if found else None
