"""A region's PostgreSQL under Patroni: its members, their configuration, their etcd.

Each member is one Patroni process (under `bookcluster.local.reaper`, so its PostgreSQL
stays in its process tree) that runs one PostgreSQL server: the first member
bootstraps (initdb), the second clones it (pg_basebackup) and streams from it as
its synchronous standby. The DCS, where the leader key lives, is one etcd per
region (`bookcluster.local.etcd`), not Patroni's built-in raft: that is deprecated upstream
("neither guarantee nor responsibility"), runs its consensus in Python threads of
the Patroni processes (which compete for the CPU with everything else here), and
a pair needs a third voter anyway (two voters have no majority once one is gone),
so raft costs a witness process where etcd costs one etcd. With `failsafe_mode`,
a primary that still reaches every member keeps running while etcd is down (no
failover is possible meanwhile).

Timing (seconds), as short as Patroni allows: the leader key lives `TTL_S` (20,
Patroni's minimum) after its last renewal, members loop every `LOOP_WAIT_S`, and
a DCS or PostgreSQL call is retried for `RETRY_TIMEOUT_S` before the leader
demotes itself (`loop_wait + 2 * retry_timeout <= ttl`). A dead primary is
replaced about TTL_S after its last renewal (members watch the leader key).

Patroni and PostgreSQL run as the unprivileged PostgreSQL user (see
`postgres_server`), which owns the data directories and the 0600 config files
(they hold the passwords).
"""

from __future__ import annotations

import os
import pwd
import sys
from pathlib import Path
from typing import Any

import yaml

from bookcluster.local import etcd
from bookcluster.local.binaries import Binaries
from bookcluster.local.postgres_server import server_parameters
from bookcluster.local.supervisor import ProcessSpec
from bookcluster.stores.connections import PG_ADMIN, pg_dsn
from bookcluster.stores.patroni_api import API_USER
from bookcluster.topology.addresses import client_networks
from bookcluster.topology.model import Region, Topology

TTL_S = 20
LOOP_WAIT_S = 1
RETRY_TIMEOUT_S = 5
NAMESPACE = "/bookcluster/"
# Parameters every member must share: they live in the DCS, not in a member's file.
CLUSTER_WIDE = ("max_connections", "max_wal_senders", "wal_level", "wal_log_hints",
                "wal_keep_size", "hot_standby")


class PatroniSetupError(RuntimeError):
    pass


def member_name(region: Region, index: int) -> str:
    return f"{region.name}-{index + 1}"


def process_name(region: Region, index: int) -> str:
    return f"{region.name}.postgres.{index + 1}"


def data_dir(topology: Topology, region: Region, index: int) -> Path:
    return topology.settings.run_dir / region.name / f"pg-{index + 1}"


def _region_dir(topology: Topology, region: Region) -> Path:
    return topology.settings.run_dir / region.name


def check_configured(region: Region) -> None:
    if not region.pg_api:
        raise PatroniSetupError(
            f"regions.{region.name}.postgres: no `patroni` and `raft` addresses; the launcher "
            "runs PostgreSQL under Patroni (see topology.yaml)")


def _dcs(topology: Topology) -> dict[str, Any]:
    """Bootstrap DCS settings: read once, when the cluster is first initialised; later
    changes go through the REST API (PATCH /config)."""
    params = server_parameters(topology.settings.durable)
    return {
        "ttl": TTL_S,
        "loop_wait": LOOP_WAIT_S,
        "retry_timeout": RETRY_TIMEOUT_S,
        # A standby further behind than this is not promoted (it would lose commits
        # in non-synchronous mode; in synchronous mode only the sync standby is).
        "maximum_lag_on_failover": 1 << 20,
        # A commit waits for the synchronous standby; Patroni promotes only a member
        # that was synchronous. A wait can still end without it (cancelled, or the
        # primary alone), so a confirm answers 200 only once a synchronous standby
        # flushed its sale (bookcluster/stores/replication.py). Not strict (docs/operations.md,
        # "PostgreSQL failover"): with the standby gone the primary goes on alone, holds
        # go on, sales are not acknowledged, and nobody can be promoted until the
        # standby caught up again; strict would stall every write of the region.
        "synchronous_mode": True,
        "synchronous_mode_strict": False,
        "failsafe_mode": True,
        "postgresql": {
            "use_pg_rewind": True,  # a returning old primary rewinds and follows
            "use_slots": True,
            "parameters": {k: v for k, v in params.items() if k in CLUSTER_WIDE},
        },
    }


def member_config(binaries: Binaries, topology: Topology, region: Region,
                  index: int) -> dict[str, Any]:
    """Member `index`'s Patroni file. Only the first member has a `bootstrap` section,
    so only it may initdb a new cluster: all start at once and the others clone it."""
    secrets = topology.secrets
    ep, api = region.pg_members[index], region.pg_api[index]
    admin = {"username": PG_ADMIN, "password": secrets.pg_admin_password}
    params = server_parameters(topology.settings.durable)
    folder = _region_dir(topology, region)
    basebackup: list[Any] = [{"checkpoint": "fast"}]
    if not topology.settings.durable:
        basebackup.append("no-sync")
    return {
        "scope": region.name,
        "namespace": NAMESPACE,
        "name": member_name(region, index),
        "log": _log(),
        "restapi": {"listen": str(api), "connect_address": str(api),
                    "authentication": {"username": API_USER,
                                       "password": secrets.get("patroni_password")}},
        "etcd3": {"hosts": [str(region.pg_etcd[0])], "username": etcd.USER,
                  "password": secrets.get("etcd_password")},
        **({"bootstrap": {
            "dcs": _dcs(topology),
            "initdb": [{"encoding": "UTF8"}, "no-locale", {"auth": "scram-sha-256"},
                       *([] if topology.settings.durable else ["no-sync"])],
        }} if index == 0 else {}),
        "postgresql": {
            "listen": str(ep),
            "connect_address": str(ep),
            "data_dir": str(data_dir(topology, region, index)),
            "bin_dir": str(binaries.pg_bindir),
            "pgpass": str(folder / f".pgpass-{index + 1}"),
            # The superuser replicates and rewinds too: one less password to keep.
            "authentication": {"superuser": admin, "replication": admin, "rewind": admin},
            "parameters": {k: v for k, v in params.items() if k not in CLUSTER_WIDE},
            # Every login a password; from loopback and the topology's hosts only.
            "pg_hba": [f"host {db} all {net} scram-sha-256"
                       for net in client_networks(topology) for db in ("all", "replication")],
            "basebackup": basebackup,
            # A member whose history cannot be rewound is cloned afresh, not left out.
            "remove_data_directory_on_rewind_failure": True,
            "remove_data_directory_on_diverged_timelines": True,
        },
    }


def _log() -> dict[str, Any]:
    # INFO shows elections, promotions, demotions and rewinds; the main loop's
    # once-a-second "no action" line would drown them.
    return {"level": "INFO", "format": "%(asctime)s %(levelname)s: %(message)s",
            "loggers": {"patroni.__main__": "WARNING", "urllib3": "WARNING"}}


def write_config(path: Path, config: dict[str, Any], user: str | None) -> None:
    """0600, owned by the user Patroni runs as: it holds passwords."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(config, out, sort_keys=False)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(tmp, entry.pw_uid, entry.pw_gid)
    tmp.replace(path)


def prepare(binaries: Binaries, topology: Topology, region: Region, user: str | None) -> None:
    """Write every config file of the region's members; own their folders."""
    check_configured(region)
    folder = _region_dir(topology, region)
    for path in (folder, folder / "etcd"):
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(path, entry.pw_uid, entry.pw_gid)
    for index in range(len(region.pg_members)):
        write_config(folder / f"patroni-{index + 1}.yml",
                     member_config(binaries, topology, region, index), user)


def member_spec(binaries: Binaries, topology: Topology, region: Region, index: int,
                user: str | None) -> ProcessSpec:
    name = process_name(region, index)
    ep, api = region.pg_members[index], region.pg_api[index]
    config = _region_dir(topology, region) / f"patroni-{index + 1}.yml"
    as_user = ["--user", user] if user is not None else []
    return ProcessSpec(
        name=name, region=region.name, role="pg-member", host=ep.host, port=ep.port,
        # The reaper stays our user; it runs Patroni as `user`.
        argv=(sys.executable, "-m", "bookcluster.local.reaper", *as_user, "--",
              str(binaries.patroni()), str(config)),
        log_path=topology.settings.run_dir / "logs" / f"{name}.log",
        address=pg_dsn(ep), api=f"http://{api}",
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])})
