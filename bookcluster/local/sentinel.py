"""Redis Sentinel: one per region, together they fail every region's master over.

Each sentinel watches every region's master (the service name is the region's
name) with a quorum of a majority of the sentinels. When a master has not
answered for `settings.redis_down_after` (1 s in `topology.yaml`), the sentinels
agree it is down, elect a leader among themselves, and the leader promotes the
master's replica *in the master's own region*: replicas in other regions run
with `replica-priority 0` (`bookcluster.local.redis_server`), so Sentinel never picks them.
The leader then points the other replicas (and, when it returns, the old
master) at the new master. Clients ask the sentinels where the master is
(`bookcluster.stores.connections.make_master`).

A sentinel rewrites its own configuration file as it learns (the current
master, the other sentinels, the replicas), so a restarted sentinel knows what
happened. The launcher writes a fresh file at each `bookcluster up`: every
Redis server then starts in its topology role again.

The file holds the Redis password (`requirepass` for clients, `sentinel-pass`
between sentinels, `auth-pass` to the servers): 0600, and so are Sentinel's own
rewrites of it (the process runs with umask 077), in a 0700 folder
(`redis_server.private_dir`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
from pathlib import Path

import redis.asyncio as aioredis

from bookcluster.local.redis_server import PRIVATE_UMASK, private_dir
from bookcluster.local.supervisor import ProcessSpec
from bookcluster.stores.connections import redis_url
from bookcluster.stores.sentinel_api import master_name
from bookcluster.topology.model import Endpoint, Region, Topology

# A failover that has not finished after this is abandoned (Sentinel then waits
# twice as long before it tries the same master again); also how long it waits for
# the replicas to follow the new master. Replicas are on loopback or a WAN link:
# seconds are plenty, and a short timeout lets a failed attempt be retried soon.
FAILOVER_TIMEOUT_MS = 4_000
# Replicas that resynchronise with a new master at once: all of them (few, small).
PARALLEL_SYNCS = 8
# How long a region added to a running cluster may take to be watched by every sentinel.
WATCH_TIMEOUT_S = 30.0
RESET_AFTER_S = 3.0  # see `watch`


def quorum(topology: Topology) -> int:
    """Sentinels that must agree a master is down: a majority (a leader needs one too)."""
    return len(topology.sentinels()) // 2 + 1


def config(topology: Topology, region: Region, data_dir: Path) -> str:
    assert region.redis_sentinel is not None
    ep = region.redis_sentinel
    password = topology.secrets.redis_password
    lines = [
        f"port {ep.port}",
        f"bind {ep.host}",
        f'dir "{data_dir}"',
        'logfile ""',
        "daemonize no",
        "protected-mode no",
        f'requirepass "{password}"',
        f'sentinel sentinel-pass "{password}"',
    ]
    if not all(_is_ip(r.redis_master.host) for r in topology.regions.values()):
        lines.append("sentinel resolve-hostnames yes")  # masters named, not numbered
    down_after_ms = int(topology.settings.redis_down_after_s * 1000)
    for name, watched in topology.regions.items():
        master = watched.redis_master
        service = master_name(name)
        lines += [
            f"sentinel monitor {service} {master.host} {master.port} {quorum(topology)}",
            f'sentinel auth-pass {service} "{password}"',
            f"sentinel down-after-milliseconds {service} {down_after_ms}",
            f"sentinel failover-timeout {service} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {service} {PARALLEL_SYNCS}",
        ]
    return "\n".join(lines) + "\n"


def _watch_settings(topology: Topology) -> dict[str, str]:
    """What each sentinel is told about every master it watches (`config`'s lines)."""
    return {
        "auth-pass": topology.secrets.redis_password,
        "down-after-milliseconds": str(int(topology.settings.redis_down_after_s * 1000)),
        "failover-timeout": str(FAILOVER_TIMEOUT_MS),
        "parallel-syncs": str(PARALLEL_SYNCS),
    }


async def watch(topology: Topology, name: str, timeout_s: float = WATCH_TIMEOUT_S) -> None:
    """Tell every running sentinel of `topology` to watch region `name`'s master (a region
    added to a running cluster), with the same settings `config` writes for the others,
    and wait until each can fail it over (it knows the master's replica in `name`).
    Until a sentinel watches it, clients that ask Sentinel for that master find none;
    from then on they follow its failovers. A sentinel that already watches it is only
    waited for."""
    region = topology.region(name)
    master, service = region.redis_master, master_name(name)
    password = topology.secrets.redis_password
    candidate = region.redis_replicas.get(name)

    async def one(ep: Endpoint) -> None:
        client = aioredis.Redis(host=ep.host, port=ep.port, password=password,
                                socket_timeout=5.0, socket_connect_timeout=5.0,
                                decode_responses=True)
        try:
            if service not in await client.sentinel_masters():
                await client.sentinel_monitor(service, master.host, master.port,
                                              quorum(topology))
                # Sent at once: it dials the master on its next tick, with the password.
                for option, value in _watch_settings(topology).items():
                    await client.sentinel_set(service, option, value)
            start = time.monotonic()
            reset = False
            while candidate is not None and not _promotable(
                    await client.sentinel_slaves(service), candidate):
                waited = time.monotonic() - start
                if waited > timeout_s:
                    raise RuntimeError(f"the sentinel at {ep} does not see {name}'s replica "
                                       f"{candidate} in sync after {timeout_s:.0f}s")
                if waited > RESET_AFTER_S and not reset:
                    # It dialled the master before it had the password (SET auth-pass does
                    # not reconnect): every command is refused NOAUTH. Start it over.
                    await client.sentinel_reset(service)
                    reset = True
                await asyncio.sleep(0.2)
        finally:
            await client.aclose()

    await asyncio.gather(*(one(ep) for ep in topology.sentinels()
                           if ep != region.redis_sentinel))


def _promotable(replicas: list[dict[str, object]], candidate: Endpoint) -> bool:
    """Whether a sentinel would promote `candidate`: it knows it, reaches it, has its
    INFO, and its link to the master is up (what SENTINEL FAILOVER asks of a replica)."""
    for state in replicas:
        if (str(state.get("ip")), int(str(state.get("port")))) != (candidate.host,
                                                                     candidate.port):
            continue
        return (state.get("is_slave") is True and not state.get("is_sdown")
                and not state.get("is_disconnected")
                and state.get("master-link-status") == "ok"
                and int(str(state.get("slave-priority", 0))) > 0
                and int(str(state.get("info-refresh", 1 << 30))) < 10_000)
    return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _write_config(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def sentinel_spec(binary: Path, topology: Topology, region: Region, *,
                  keep_config: bool = False) -> ProcessSpec:
    """The region's sentinel, with a fresh configuration file (see the module's doc), or
    with `keep_config` the one it rewrote as it learned, if there is one (a container
    restarted alone: the other sentinels went on)."""
    assert region.redis_sentinel is not None
    ep = region.redis_sentinel
    data_dir = topology.settings.run_dir / region.name / "redis-sentinel"
    private_dir(data_dir)
    conf = data_dir / "sentinel.conf"
    if not (keep_config and conf.exists()):
        _write_config(conf, config(topology, region, data_dir))
    name = f"{region.name}.redis.sentinel"
    return ProcessSpec(
        name=name, region=region.name, role="redis-sentinel", host=ep.host, port=ep.port,
        argv=(str(binary), str(conf), "--sentinel"),
        log_path=topology.settings.run_dir / "logs" / f"{name}.log",
        address=redis_url(ep), umask=PRIVATE_UMASK)
