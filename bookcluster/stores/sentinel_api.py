"""Asking the sentinels (loopback): where each region's Redis master is now, and the
operator's planned switchover.

A switchover is `SENTINEL FAILOVER`: Sentinel promotes the master's replica in
its region at once, without waiting for the master to be found down. Sentinel
itself does not stop the old master from taking writes until it demotes it, a
moment after the promotion, and writes it took meanwhile would be lost (the
mirror reconciler would repair them from PostgreSQL). So the switchover first
pauses writes on the old master (`CLIENT PAUSE … WRITE`: replication goes on,
so the replica catches up with every write), and lifts the pause once the old
master follows the new one: a planned switchover loses nothing. Writes of the
region answer 503 (`region_unavailable`, Retry-After) for the second or two it
takes.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from bookcluster.stores import probe
from bookcluster.topology.model import Endpoint, Topology
from bookcluster.topology.secrets import Secrets

if TYPE_CHECKING:
    import redis.asyncio as aioredis

TIMEOUT_S = 2.0
SWITCHOVER_TIMEOUT_S = 30.0
# Writes on the old master wait (clients give up after their own timeout: 503) for at
# most this long; the pause is lifted as soon as the old master follows the new one.
PAUSE_MS = 10_000


def master_name(region: str) -> str:
    """Sentinel's name for a region's master."""
    return region


class SentinelError(RuntimeError):
    pass


def _client(ep: Endpoint, secrets: Secrets) -> aioredis.Redis:
    import redis.asyncio as aioredis  # not for `bookcluster status`: it needs server_name

    return aioredis.Redis(host=ep.host, port=ep.port, password=secrets.redis_password,
                          socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S,
                          decode_responses=True)


def server_name(topology: Topology, ep: Endpoint) -> str:
    """The launcher's name of the Redis server at `ep` (e.g. north.redis.replica.north)."""
    for region in topology.regions.values():
        if region.redis_master == ep:
            return f"{region.name}.redis.master"
        for source, replica in region.redis_replicas.items():
            if replica == ep:
                return f"{region.name}.redis.replica.{source}"
    return "?"


async def master_of(topology: Topology, region: str) -> Endpoint:
    """Where the first sentinel that answers sees `region`'s master now (the prober's
    question)."""
    if not topology.sentinels():
        raise SentinelError(f"{region}: no sentinel in the topology")
    try:
        master, _ = await probe.sentinel_master(topology, master_name(region), TIMEOUT_S)
    except LookupError as exc:
        raise SentinelError(f"{region}: no sentinel answers ({exc})") from None
    return master


async def _role(ep: Endpoint, secrets: Secrets) -> str | None:
    try:
        found = await probe.redis_replication(ep.host, ep.port, secrets.redis_password,
                                              TIMEOUT_S)
    except (OSError, TimeoutError):
        return None
    return found.role


async def switchover(topology: Topology, region: str) -> tuple[Endpoint, Endpoint]:
    """Planned switchover of `region`'s master to its replica in `region` (see the
    module's doc). Returns (old, new) master; raises SentinelError when Sentinel refuses
    (no replica may be promoted, a failover already under way) or it takes too long."""
    from redis.exceptions import RedisError

    secrets = topology.secrets
    old = await master_of(topology, region)
    paused = _client(old, secrets)
    try:
        try:
            await paused.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
        except (OSError, RedisError) as exc:
            raise SentinelError(f"{region}: the master at {old} does not answer ({exc}); "
                                "if it is down, Sentinel fails it over by itself") from exc
        await _ask_failover(topology, region)
        deadline = time.monotonic() + SWITCHOVER_TIMEOUT_S
        new = old
        while new == old:
            if time.monotonic() > deadline:
                raise SentinelError(f"{region}: still {old} after {SWITCHOVER_TIMEOUT_S:.0f}s")
            await asyncio.sleep(0.1)
            new = await master_of(topology, region)
        # Writes stay paused until the old master follows the new one (or the pause ends).
        while await _role(old, secrets) == "master" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return old, new
    finally:
        try:
            await paused.execute_command("CLIENT", "UNPAUSE")
        except (OSError, RedisError):
            pass  # the pause ends by itself
        await paused.aclose()


async def _ask_failover(topology: Topology, region: str) -> None:
    from redis.exceptions import RedisError, ResponseError

    errors = []
    for ep in topology.sentinels(first=region):
        client = _client(ep, topology.secrets)
        try:
            await client.execute_command("SENTINEL", "FAILOVER", master_name(region))
            return
        except ResponseError as exc:  # NOGOODSLAVE, INPROG: a refusal, say why
            hint = (f" (is {region}.redis.replica.{region}, or whichever server of {region} "
                    "is not the master, up and in sync?)" if "NOGOODSLAVE" in str(exc) else "")
            raise SentinelError(f"{region}: Sentinel refused the failover: {exc}{hint}") from exc
        except (OSError, RedisError) as exc:
            errors.append(f"{ep}: {type(exc).__name__} {exc}")
        finally:
            await client.aclose()
    raise SentinelError(f"{region}: no sentinel answers ({'; '.join(errors)})")
