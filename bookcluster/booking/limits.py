"""Rate limits: token buckets per user and per client address.

Writes are limited where they run, in the home region's Redis master (one Lua
script per bucket, both buckets in one round trip), so every node of the
region shares the count. A node remembers until when the master refused a user
or an address, and refuses their next writes itself until then, before they
take a place in the write queue (`admission.py`): a flood of rejected writes
costs no Redis call and no queue place. Reads are limited per node in memory:
they never leave the reader's region and must stay cheap; public reads per
address, token reads per user and per address. Requests with a bad token and
webhooks with a bad signature are limited per address in node memory too. Over
a limit: 429 with `Retry-After`. The per-user and per-address caps on holds live
in PostgreSQL (`bc_record_hold`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import OrderedDict
from typing import Any, NoReturn

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from bookcluster.errors import RateLimited
from bookcluster.metrics import NodeMetrics
from bookcluster.seats import keys
from bookcluster.seats.scripts import TOKEN_BUCKET
from bookcluster.stores import deadline
from bookcluster.stores.connections import Connections
from bookcluster.stores.errors import REDIS_UNAVAILABLE
from bookcluster.topology.errors import RegionUnavailable
from bookcluster.topology.model import Limits, Rate

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


class NodeBuckets:
    """Token buckets in this node's memory, one per key, the least recent forgotten
    first (at most READ_BUCKETS_MAX keys)."""

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _now(self, key: str) -> tuple[float, float]:
        now = time.monotonic()
        tokens, last = self._buckets.pop(key, (float(self.rate.burst), now))
        return min(self.rate.burst, tokens + (now - last) * self.rate.per_s), now

    def take(self, key: str) -> int:
        """Take a token: 0, or the ms until one is free (nothing taken)."""
        tokens, now = self._now(key)
        wait_ms = 0 if tokens >= 1 else int((1 - tokens) / self.rate.per_s * 1000)
        self._buckets[key] = (tokens - 1 if wait_ms == 0 else tokens, now)
        if len(self._buckets) > READ_BUCKETS_MAX:
            self._buckets.popitem(last=False)
        return wait_ms

    def empty(self, key: str) -> int:
        """The ms until `key` has a token again (0: it has one now); nothing taken."""
        if key not in self._buckets:
            return 0
        tokens, now = self._now(key)
        self._buckets[key] = (tokens, now)
        return 0 if tokens >= 1 else int((1 - tokens) / self.rate.per_s * 1000)


class RateLimiter:
    def __init__(self, connections: Connections, limits: Limits, metrics: NodeMetrics) -> None:
        self._connections = connections
        self._limits = limits
        self._metrics = metrics
        self._reads = NodeBuckets(limits.ip_reads)
        self._user_reads = NodeBuckets(limits.user_reads)
        self._rejects = NodeBuckets(limits.ip_rejects)
        # (limit, region, user or address) -> monotonic time until which the home
        # master's bucket is empty, as it last said.
        self._refused_until: OrderedDict[tuple[str, str, str], float] = OrderedDict()

    def precheck_write(self, region: str, user: str, address: str) -> None:
        """Refuse at once (no I/O) a write whose user or address the home master refused
        moments ago and whose bucket has no token yet."""
        now = time.monotonic()
        for name, key in (("user_writes", user), ("ip_writes", address)):
            until = self._refused_until.get((name, region, key))
            if until is None:
                continue
            if until > now:
                self._refuse(name, int((until - now) * 1000))
            del self._refused_until[(name, region, key)]

    def _remember_refusal(self, name: str, region: str, key: str, wait_ms: int) -> None:
        self._refused_until[(name, region, key)] = time.monotonic() + wait_ms / 1000
        self._refused_until.move_to_end((name, region, key))
        if len(self._refused_until) > READ_BUCKETS_MAX:
            self._refused_until.popitem(last=False)

    async def check_write(self, region: str, user: str, address: str, *,
                          redis_bound: bool) -> None:
        """Take one token from the user's and the address's bucket in `region`.

        If that Redis master does not answer, a write that needs it anyway
        (`redis_bound`: a hold) is refused now, 503; any other write goes on
        unlimited: PostgreSQL alone decides a sale, and a limiter must not stop one."""
        client = self._connections.redis_master(region)
        buckets = self.buckets(user, address)
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
        self.judge(region, user, address,
                   [(int(allowed), int(wait_ms)) for allowed, wait_ms in results])

    def buckets(self, user: str, address: str) -> tuple[tuple[str, str, Rate], ...]:
        return (("user_writes", keys.rate_bucket("user", user), self._limits.user_writes),
                ("ip_writes", keys.rate_bucket("ip", address), self._limits.ip_writes))

    def judge(self, region: str, user: str, address: str,
              results: list[tuple[int, int]]) -> None:
        """The buckets' answers (granted, wait ms), user's first: the first refusal is
        remembered and answered 429."""
        for (name, _, _), key, (allowed, wait_ms) in zip(self.buckets(user, address),
                                                          (user, address), results,
                                                          strict=True):
            if not allowed:
                self._remember_refusal(name, region, key, wait_ms)
                self._refuse(name, wait_ms)

    def tokens(self, region: str, user: str, address: str, *,
               redis_bound: bool) -> WriteTokens:
        """The tokens of one write, for its hold script to take (`WriteTokens`)."""
        return WriteTokens(self, region, user, address, redis_bound)

    def check_read(self, address: str) -> None:
        """Take one token from this node's bucket for `address` (no I/O)."""
        wait_ms = self._reads.take(address)
        if wait_ms:
            self._refuse("ip_reads", wait_ms)

    def check_user_read(self, user: str, address: str) -> None:
        """A read with a valid token: one token of the user's bucket and of the
        address's (the same one public reads take), in this node's memory."""
        wait_ms = self._user_reads.take(user)
        if wait_ms:
            self._refuse("user_reads", wait_ms)
        self.check_read(address)

    def check_rejecting(self, address: str) -> None:
        """Refuse (429) a request from an address whose rejects bucket is empty: its
        token or signature is not even looked at."""
        wait_ms = self._rejects.empty(address)
        if wait_ms:
            self._refuse("ip_rejects", wait_ms)

    def rejected(self, address: str) -> None:
        """Count a request refused for its token or signature against its address."""
        self._rejects.take(address)

    def _refuse(self, limit: str, wait_ms: int) -> None:
        self._metrics.limit_refusals.labels(self._metrics.region, limit).inc()
        raise RateLimited(limit, _retry_after_s(wait_ms))


class WriteTokens:
    """One write's tokens (its user's and its address's buckets in its home region),
    taken exactly once: by the hold script itself (HOLD_LIMITED gets `keys` and
    `args`; `sent` before the call, `answer` on its refusal), or, when the write
    ends without sending it (an invalid body, unknown seats, a replay under its
    Idempotency-Key), by `settle`, through the rate-limit pipeline as any other write.
    A write thus takes the same tokens as when every write took them before its work;
    an over-limit one that failed is answered 429, as it was then."""

    def __init__(self, limiter: RateLimiter, region: str, user: str, address: str,
                 redis_bound: bool) -> None:
        self._limiter = limiter
        self.region = region
        self._user = user
        self._address = address
        self._redis_bound = redis_bound
        self._taken = False

    def keys(self) -> list[str]:
        """KEYS[6], KEYS[7] of HOLD_LIMITED."""
        return [key for _, key, _ in self._limiter.buckets(self._user, self._address)]

    def args(self) -> list[float]:
        """The last four ARGV of HOLD_LIMITED."""
        return [n for _, _, rate in self._limiter.buckets(self._user, self._address)
                for n in (rate.per_s, rate.burst)]

    def sent(self) -> None:
        """The hold script is about to be sent: it takes the tokens (or may have, if
        its answer is lost); never again."""
        self._taken = True

    def answer(self, result: list[Any]) -> NoReturn:
        """A HOLD_LIMITED answer {-2, user granted, wait, address granted, wait}:
        remember the refusal and raise the 429."""
        self._limiter.judge(self.region, self._user, self._address,
                            [(int(result[1]), int(result[2])),
                             (int(result[3]), int(result[4]))])
        raise RuntimeError(f"hold script refused no bucket: {result!r}")

    async def settle(self) -> None:
        """Take the tokens now if the hold script did not (429 if refused)."""
        if self._taken:
            return
        self._taken = True
        await self._limiter.check_write(self.region, self._user, self._address,
                                        redis_bound=self._redis_bound)
