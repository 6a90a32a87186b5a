"""PostgreSQL servers: their settings, the OS user they run as, the application role.

A region's servers run under Patroni (`bookcluster.local.patroni`); a plain server
(`init_primary`, `primary_spec`) is for tools that want one of their own, such
as the benchmark's raw limits.

PostgreSQL refuses to run as root, so when the launcher is root every
PostgreSQL command (and Patroni) runs as an unprivileged user
(BOOKCLUSTER_PG_USER, else `postgres` if it exists, else `nobody`) that owns
the data directories.

Every connection logs in with a password (scram-sha-256, set by initdb for
all of pg_hba.conf). The superuser `bookcluster_admin` creates the database
and replicates; nodes, workers and migrations use `bookcluster`, a role that
owns the schema but is not a superuser (it cannot run programs as the OS user);
it may read the standbys' replication positions (`pg_read_all_stats`).
That role carries lock, statement and idle-in-transaction timeouts, so a
stopped client cannot keep row locks.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
from pathlib import Path

from bookcluster.local.binaries import Binaries
from bookcluster.local.supervisor import ProcessSpec
from bookcluster.stores.connections import (
    PG_ADMIN,
    pg_dsn,
)
from bookcluster.topology import environment
from bookcluster.topology.model import Endpoint, Region, Topology
from bookcluster.topology.secrets import Secrets


class PostgresSetupError(RuntimeError):
    pass


def pg_os_user() -> str | None:
    """The OS user PostgreSQL runs as, or None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    explicit = environment.setting("PG_USER")
    if explicit:
        return explicit
    try:
        pwd.getpwnam("postgres")
        return "postgres"
    except KeyError:
        return "nobody"


def check_reachable(run_dir: Path, user: str | None) -> None:
    """Fail early, naming the directory, if `user` cannot reach the run folder."""
    if user is None:
        return
    for parent in [run_dir, *run_dir.parents]:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            raise PostgresSetupError(
                f"PostgreSQL runs as {user!r} (it refuses root) and cannot enter {parent} "
                f"(mode {oct(parent.stat().st_mode & 0o777)}); "
                f"use a run folder outside it or `chmod o+x {parent}`")


def _own(path: Path, user: str | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def server_parameters(durable: bool) -> dict[str, str]:
    """PostgreSQL settings of every server we run (Patroni members and plain ones)."""
    return {
        "unix_socket_directories": "",  # TCP only: no socket files to own or leave behind
        "max_connections": "300",  # 15 nodes x a pool per region, plus tools
        "wal_level": "replica",
        "max_wal_senders": "10",
        # The run folder stays bounded (README, "Disk"): PostgreSQL's default max_wal_size
        # (1 GB) let pg_wal of each of six members grow to a gigabyte in minutes of load.
        # Checkpoints come at 256 MB of WAL instead; a standby that is away keeps at most
        # 512 MB in its slot (then it is cloned afresh by Patroni) and 128 MB without.
        "wal_keep_size": "128MB",
        "max_wal_size": "256MB",
        "min_wal_size": "64MB",
        "max_slot_wal_keep_size": "512MB",
        "hot_standby": "on",
        # pg_rewind (a demoted primary rejoining) needs hint-bit changes in the WAL
        # and full page writes.
        "wal_log_hints": "on",
        "full_page_writes": "on",
        "fsync": "on" if durable else "off",
        # Always on: it is also what makes a commit wait for the synchronous standby.
        # Without fsync (durable: false) the local flush it waits for costs nothing.
        "synchronous_commit": "on",
        "log_min_messages": "warning",
        "log_line_prefix": "%m [%p] ",
        # Find a deadlock well inside the 1.2 s write deadline and before lock_timeout
        # (1 s), so one victim gets a 503 and the other transaction goes on.
        "deadlock_timeout": "200ms",
    }


def _server_argv(binaries: Binaries, data_dir: Path, ep: Endpoint, durable: bool) -> list[str]:
    settings = {"listen_addresses": ep.host, **server_parameters(durable)}
    argv = [str(binaries.pg("postgres")), "-D", str(data_dir), "-p", str(ep.port)]
    for key, value in settings.items():
        argv += ["-c", f"{key}={value}"]
    return argv


async def _run(argv: list[str], user: str | None, what: str,
               env: dict[str, str] | None = None) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, user=user, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL, env={**environment.inherited(), **(env or {})},
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise PostgresSetupError(f"{what} failed (exit {proc.returncode}):\n{out.decode()[-2000:]}")


async def init_primary(binaries: Binaries, data_dir: Path, user: str | None,
                       secrets: Secrets) -> bool:
    """initdb unless the data directory already exists. Returns True if it created one."""
    if (data_dir / "PG_VERSION").exists():
        return False
    _own(data_dir.parent, user)
    # initdb reads the superuser's password from a file its user can read; gone after.
    pwfile = data_dir.parent / ".initdb-password"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.pg_admin_password + "\n")
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    try:
        argv = [str(binaries.pg("initdb")), "-D", str(data_dir), "-U", PG_ADMIN,
                f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--no-locale",
                "--no-sync"]
        await _run(argv, user, f"initdb {data_dir}")
    finally:
        pwfile.unlink(missing_ok=True)
    return True


def data_dir(topology: Topology, region: Region, role: str) -> Path:
    return topology.settings.run_dir / region.name / role


def primary_spec(binaries: Binaries, topology: Topology, region: Region,
                 user: str | None) -> ProcessSpec:
    return _spec(binaries, topology, region, "pg-primary", region.pg_primary, user)


def _spec(binaries: Binaries, topology: Topology, region: Region, role: str, ep: Endpoint,
          user: str | None) -> ProcessSpec:
    name = f"{region.name}.postgres.{role.removeprefix('pg-')}"
    return ProcessSpec(
        name=name,
        region=region.name,
        role=role,
        host=ep.host,
        port=ep.port,
        argv=tuple(_server_argv(binaries, data_dir(topology, region, role), ep,
                                topology.settings.durable)),
        log_path=topology.settings.run_dir / "logs" / f"{name}.log",
        address=pg_dsn(ep),
        user=user,
        stop_signal=signal.SIGINT,  # "fast" shutdown: roll back sessions, checkpoint, exit
    )
