"""Redis processes of a region: its master and its replicas of every region's master.

With Sentinel (`bookcluster.local.sentinel`) a master may be replaced by its replica in its
own region, so that replica is configured like a master (persistence, the
`min-replicas` rule below) and the replicas in other regions never become one
(`replica-priority 0`). Names stay what the topology says (`north.redis.master`)
while roles change: `bookcluster status` shows each server's role now.
"""

from __future__ import annotations

import os
from pathlib import Path

from bookcluster.local.supervisor import ProcessSpec
from bookcluster.stores.connections import redis_url
from bookcluster.topology.model import Endpoint, Region, Topology

# Redis and Sentinel rewrite their configuration files (Sentinel as it learns; a server
# when Sentinel reconfigures it in a failover) with 0644 & ~umask, and those files hold
# the Redis password: the processes run with this umask, in folders only their owner
# (root, or whoever runs the launcher) can enter, though the region's folder above
# belongs to PostgreSQL's OS user.
PRIVATE_UMASK = 0o077


def private_dir(path: Path) -> Path:
    """`path` created if needed, and closed to every other OS user (0700)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _auth_conf(data_dir: Path, password: str) -> Path:
    """The password in a 0600 config file, not on the command line where `ps` shows it.
    `masterauth` too: any server may be a replica that must log in to its master."""
    path = data_dir / "auth.conf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f'requirepass "{password}"\nmasterauth "{password}"\n')
    return path


# A master (or a master candidate) takes writes only while at least one replica
# acknowledged its stream within MIN_REPLICAS_MAX_LAG_S. That bounds what a promotion
# loses: a master cut off from every replica (frozen, partitioned, or an old master
# that woke up after its replacement) refuses writes (NOREPLICAS, a 503 to clients)
# instead of taking ones no replica will ever see. Replicas acknowledge every second;
# 3 s leaves room for a busy machine.
MIN_REPLICAS_TO_WRITE = 1
MIN_REPLICAS_MAX_LAG_S = 3


def _failover_args(topology: Topology) -> list[str]:
    if not topology.sentinels():
        return []
    return ["--min-replicas-to-write", str(MIN_REPLICAS_TO_WRITE),
            "--min-replicas-max-lag", str(MIN_REPLICAS_MAX_LAG_S)]


def _argv(binary: Path, ep: Endpoint, data_dir: Path, password: str, *,
          durable: bool) -> list[str]:
    return [
        str(binary),
        str(_auth_conf(data_dir, password)),
        "--bind", ep.host,
        "--port", str(ep.port),
        "--dir", str(data_dir),
        "--daemonize", "no",
        "--protected-mode", "no",
        "--save", "",
        # Masters keep an append-only file so a restart does not forget holds
        # and sold seats; PostgreSQL stays the authority either way.
        "--appendonly", "yes" if durable else "no",
        "--appendfsync", "everysec",
        "--logfile", "",
    ]


def master_spec(binary: Path, topology: Topology, region: Region) -> ProcessSpec:
    ep = region.redis_master
    data_dir = topology.settings.run_dir / region.name / "redis-master"
    private_dir(data_dir)
    return ProcessSpec(
        name=f"{region.name}.redis.master",
        region=region.name,
        role="redis-master",
        host=ep.host,
        port=ep.port,
        argv=tuple(_argv(binary, ep, data_dir, topology.secrets.redis_password,
                         durable=topology.settings.durable) + _failover_args(topology)),
        log_path=topology.settings.run_dir / "logs" / f"{region.name}.redis.master.log",
        address=redis_url(ep),
        umask=PRIVATE_UMASK,
    )


def replica_spec(binary: Path, topology: Topology, region: Region, source: str,
                 master: Endpoint | None = None) -> ProcessSpec:
    """A replica in `region` of `source`'s master, dialled at `master` (a WAN proxy) if given.
    The one in the master's own region is the candidate Sentinel promotes."""
    ep = region.redis_replicas[source]
    master = master or topology.region(source).redis_master
    data_dir = topology.settings.run_dir / region.name / f"redis-replica-{source}"
    private_dir(data_dir)
    candidate = region.name == source
    argv = _argv(binary, ep, data_dir, topology.secrets.redis_password,
                 durable=candidate and topology.settings.durable)
    # Never promoted: a region's seats stay in its own region (cross-region failover is
    # not ours to make).
    argv += _failover_args(topology) if candidate else ["--replica-priority", "0"]
    argv += [
        "--replicaof", master.host, str(master.port),
        "--replica-read-only", "yes",
        # While the link to the master is down, keep serving the last copy:
        # seat maps are AP and say how old they are.
        "--replica-serve-stale-data", "yes",
    ]
    return ProcessSpec(
        name=f"{region.name}.redis.replica.{source}",
        region=region.name,
        role="redis-replica",
        host=ep.host,
        port=ep.port,
        argv=tuple(argv),
        log_path=topology.settings.run_dir / "logs" / f"{region.name}.redis.replica.{source}.log",
        address=redis_url(ep),
        umask=PRIVATE_UMASK,
        source=source,
    )
