"""Rate limits: token buckets per user and per client address.

Writes are limited where they run, in the home region's Redis master (one Lua
script per bucket, both buckets in one round trip), so every node of the
region shares the count. Reads are limited per node in memory: they never
leave the reader's region and must stay cheap. Over the limit: 429 with
`Retry-After`. The per-user caps on holds live in PostgreSQL (`bc_record_hold`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import OrderedDict
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from region_node import deadline, keys
from region_node.errors import RateLimited
from region_node.home import REDIS_UNAVAILABLE
from region_node.metrics import NodeMetrics
from router.errors import RegionUnavailable
from router.registry import Connections
from router.topology import Limits, Rate

# KEYS[1] bucket hash {tokens, ts}; ARGV: tokens per second, burst.
# Returns {1, 0} when a token was taken, {0, ms until one is free} otherwise.
# Time is the master's clock, so every node of the region agrees.
TOKEN_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst = tonumber(ARGV[1]) / 1000, tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed, wait = 0, math.ceil((1 - tokens) / rate)
if tokens >= 1 then tokens, allowed, wait = tokens - 1, 1, 0 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
return {allowed, wait}
"""
log = logging.getLogger(__name__)
READ_BUCKETS_MAX = 100_000  # addresses remembered per node; the least recent go first


TOKEN_BUCKET_SHA = hashlib.sha1(TOKEN_BUCKET.encode()).hexdigest()


async def _take_tokens(client: Redis, buckets: tuple[tuple[str, str, Rate], ...]) -> list[Any]:
    """One round trip: an EVALSHA per bucket (each its own key, so its own cluster slot)
    in one pipeline. Not redis-py's registered scripts: in a pipeline they cost a SCRIPT
    EXISTS round trip first, every time."""
    async with client.pipeline(transaction=False) as pipe:
        for _, key, rate in buckets:
            pipe.evalsha(TOKEN_BUCKET_SHA, 1, key, rate.per_s, rate.burst)
        return await pipe.execute()


def _retry_after_s(wait_ms: float) -> int:
    return max(1, math.ceil(wait_ms / 1000))


class RateLimiter:
    def __init__(self, connections: Connections, limits: Limits, metrics: NodeMetrics) -> None:
        self._connections = connections
        self._limits = limits
        self._metrics = metrics
        self._reads: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def check_write(self, region: str, user: str, address: str, *,
                          redis_bound: bool) -> None:
        """Take one token from the user's and the address's bucket in `region`.

        If that Redis master does not answer, a write that needs it anyway
        (`redis_bound`: a hold) is refused now, 503; any other write goes on
        unlimited: PostgreSQL alone decides a sale, and a limiter must not stop one."""
        client = self._connections.redis_master(region)
        buckets = (("user_writes", keys.rate_bucket("user", user), self._limits.user_writes),
                   ("ip_writes", keys.rate_bucket("ip", address), self._limits.ip_writes))
        left = deadline.current().left_for(region, "redis master (rate limits)")
        try:
            async with asyncio.timeout(left):
                try:
                    results = await _take_tokens(client, buckets)
                except NoScriptError:  # a master that restarted or took over: load it once
                    await client.script_load(TOKEN_BUCKET)
                    results = await _take_tokens(client, buckets)
        except REDIS_UNAVAILABLE as exc:
            if redis_bound:
                raise RegionUnavailable(region, "redis master") from exc
            self._metrics.limit_refusals.labels(self._metrics.region, "unchecked").inc()
            log.warning("rate limits of %s unchecked: its Redis master did not answer", region)
            return
        for (name, _, _), (allowed, wait_ms) in zip(buckets, results, strict=True):
            if not int(allowed):
                self._refuse(name, int(wait_ms))

    def check_read(self, address: str) -> None:
        """Take one token from this node's bucket for `address` (no I/O)."""
        rate: Rate = self._limits.ip_reads
        now = time.monotonic()
        tokens, last = self._reads.pop(address, (float(rate.burst), now))
        tokens = min(rate.burst, tokens + (now - last) * rate.per_s)
        if tokens < 1:
            self._reads[address] = (tokens, now)
            self._refuse("ip_reads", int((1 - tokens) / rate.per_s * 1000))
        self._reads[address] = (tokens - 1, now)
        if len(self._reads) > READ_BUCKETS_MAX:
            self._reads.popitem(last=False)

    def _refuse(self, limit: str, wait_ms: int) -> None:
        self._metrics.limit_refusals.labels(self._metrics.region, limit).inc()
        raise RateLimited(limit, _retry_after_s(wait_ms))
