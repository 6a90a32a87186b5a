"""Redis processes of a region: its master and its replicas of every region's master."""

from __future__ import annotations

import os
from pathlib import Path

from cluster.supervisor import ProcessSpec
from router.registry import redis_url
from router.topology import Endpoint, Region, Topology


def _auth_conf(data_dir: Path, password: str) -> Path:
    """The password in a 0600 config file, not on the command line where `ps` shows it.
    `masterauth` too: any server may be a replica that must log in to its master."""
    path = data_dir / "auth.conf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f'requirepass "{password}"\nmasterauth "{password}"\n')
    return path


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
    data_dir.mkdir(parents=True, exist_ok=True)
    return ProcessSpec(
        name=f"{region.name}.redis.master",
        region=region.name,
        role="redis-master",
        host=ep.host,
        port=ep.port,
        argv=tuple(_argv(binary, ep, data_dir, topology.secrets.redis_password,
                         durable=topology.settings.durable)),
        log_path=topology.settings.run_dir / "logs" / f"{region.name}.redis.master.log",
        address=redis_url(ep),
    )


def replica_spec(binary: Path, topology: Topology, region: Region, source: str,
                 master: Endpoint | None = None) -> ProcessSpec:
    """A replica in `region` of `source`'s master, dialled at `master` (a WAN proxy) if given."""
    ep = region.redis_replicas[source]
    master = master or topology.region(source).redis_master
    data_dir = topology.settings.run_dir / region.name / f"redis-replica-{source}"
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = _argv(binary, ep, data_dir, topology.secrets.redis_password, durable=False) + [
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
        source=source,
    )
