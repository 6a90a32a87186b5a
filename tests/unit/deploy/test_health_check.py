"""The container health check's interface (`python3 -m bookcluster.deploy.health_check
RUN_DIR NAME`): its usage, exit codes and what it imports. Its answers from live
processes are tested in tests/integration/cluster/test_service.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bookcluster.deploy import health_check
from bookcluster.topology.secrets import generate_local


def test_usage_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert health_check.main([]) == 2
    assert "usage: python3 -m bookcluster.deploy.health_check RUN_DIR NAME" in \
        capsys.readouterr().err


def test_a_process_run_never_recorded_is_unhealthy(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert health_check.main([str(tmp_path), "north.redis.master"]) == 1
    assert capsys.readouterr().out.startswith("unhealthy: FileNotFoundError")


def test_a_missing_secret_is_unhealthy_and_named(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    health_check.record(tmp_path, {"name": "north.redis.master", "region": "north",
                                   "role": "redis-master", "host": "127.0.0.1", "port": 1})
    assert health_check.main([str(tmp_path), "north.redis.master"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("unhealthy: SecretMissing") and "redis_password" in out


def test_a_role_without_a_container_check_is_unhealthy(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    generate_local(tmp_path)
    health_check.record(tmp_path, {"name": "bench.postgres", "region": "north",
                                   "role": "pg-primary", "address": "postgresql://x"})
    assert health_check.main([str(tmp_path), "bench.postgres"]) == 1
    assert capsys.readouterr().out == "unhealthy: ValueError: no container check for a " \
        "pg-primary\n"


def test_record_keeps_what_the_check_needs(tmp_path: Path) -> None:
    health_check.record(tmp_path, {"name": "north.redis.replica.west", "region": "north",
                                   "role": "redis-replica", "host": "127.0.0.1", "port": 6412,
                                   "source": "west", "argv": ["redis-server"], "env": {}})
    assert json.loads(health_check.probe_file(tmp_path, "north.redis.replica.west")
                      .read_text()) == {
        "name": "north.redis.replica.west", "region": "north", "role": "redis-replica",
        "host": "127.0.0.1", "port": 6412, "address": None, "api": None, "source": "west"}


def test_it_imports_no_event_loop_client_library_or_yaml() -> None:
    """An engine runs it for every container every few seconds: it stays cheap."""
    code = ("import sys, bookcluster.deploy.health_check; "
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    assert not loaded & {"asyncio", "aiohttp", "redis", "asyncpg", "yaml", "uhashring",
                         "prometheus_client"}
