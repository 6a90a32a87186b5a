"""`bookcluster up/status/down` as an operator runs them, from other shells."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bookcluster.local.supervisor import pid_alive
from bookcluster.topology.load import load_topology
from bookcluster.topology.runstate import STATE_FILE
from tests.integration.support import topology_yaml

READY_LINE = "stop with Ctrl-C"


def bookcluster(topology: Path, *args: str,
                timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bookcluster", "--topology", str(topology), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


class Launcher:
    """A `bookcluster up` running in the background, with its output in a file."""

    def __init__(self, topology: Path, log: Path) -> None:
        self.log = log
        with open(log, "w") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bookcluster", "--topology", str(topology), "up",
                 "--catalog", "small", "--hold-ttl", "5s"],
                stdout=handle, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while READY_LINE not in log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"bookcluster up did not start:\n{log.read_text()}")
            time.sleep(0.2)

    def wait_exit(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)


def status(topology: Path) -> dict[str, Any]:
    result = bookcluster(topology, "status", "--json")
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def assert_nothing_left(processes: list[dict[str, Any]]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = [p["name"] for p in processes if pid_alive(p["pid"])]
        busy = [p["port"] for p in processes if not port_free(p["port"])]
        if not alive and not busy:
            return
        time.sleep(0.2)
    raise AssertionError(f"left behind: processes {alive}, ports {busy}")


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """Like pytest's, but reachable by PostgreSQL's unprivileged user (pytest's is 0700)."""
    with tempfile.TemporaryDirectory(prefix="bookcluster-launcher-") as tmp:
        Path(tmp).chmod(0o755)
        yield Path(tmp)


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "topology.yaml"
    path.write_text(topology_yaml(tmp_path / "run", regions=("north",), nodes=1,
                                  standby=("north",)))
    yield path
    bookcluster(path, "down")  # whatever a failed test left running


def test_up_status_down_leaves_nothing(topology: Path, tmp_path: Path) -> None:
    launcher = Launcher(topology, tmp_path / "up.log")
    output = launcher.log.read_text()
    assert "[redis] ok" in output and "[postgres] ok" in output and "[nodes] ok" in output

    state = status(topology)
    procs = state["processes"]
    assert state["running"] and all(p["healthy"] for p in procs), procs
    assert sorted(p["role"] for p in procs) == [
        "etcd", "node", "pg-member", "pg-member", "redis-master", "redis-replica",
        "redis-sentinel"]
    for proc in procs:
        assert {"region", "role", "pid", "host", "port", "address", "healthy"} <= set(proc)
    members = {p["name"]: p for p in procs if p["role"] == "pg-member"}
    leader, standby = members["north.postgres.1"], members["north.postgres.2"]
    assert leader["pg_role"] == "leader" and leader["timeline"] == 1
    assert standby["pg_role"] in ("sync_standby", "replica") and standby["leader"] == "north-1"
    replica = next(p for p in procs if p["role"] == "redis-replica")
    assert standby["lag_bytes"] is not None and replica["lag_bytes"] is not None
    assert standby["link"] == "streaming" and replica["link"] == "up"
    master = next(p for p in procs if p["role"] == "redis-master")
    assert master["redis_role"] == "master" and replica["redis_role"] == "replica"
    assert replica["master"] == f"{master['host']}:{master['port']}"
    sentinel = next(p for p in procs if p["role"] == "redis-sentinel")
    assert sentinel["sentinel_masters"]["north"]["address"] == replica["master"]
    assert state["redis_masters"]["north"]["server"] == "north.redis.master"
    text = bookcluster(topology, "status").stdout  # the table as it is since `NOW`
    assert "north.postgres.2" in text and "LAG" in text and "pg leader" in text
    assert "Redis masters as Sentinel sees them:" in text
    assert f"{replica['master']} (north.redis.master)" in text
    wide = bookcluster(topology, "status", "--wide").stdout
    assert f"follows {replica['master']}, link up" in wide and "leader north-1" in wide

    began = time.monotonic()
    down = bookcluster(topology, "down")
    print(f"bookcluster down took {time.monotonic() - began:.1f}s:\n{down.stdout}")
    assert down.returncode == 0, down.stderr
    assert "  north: stopped (" in down.stdout  # progress per region
    assert launcher.wait_exit() == 0
    assert "  north: stopped (" in launcher.log.read_text()
    assert_nothing_left(procs)
    assert (tmp_path / "run" / "north" / "pg-1" / "PG_VERSION").exists()  # data kept
    assert bookcluster(topology, "status", "--json").returncode == 1


def test_restart_on_kept_data_then_sigterm_to_launcher(topology: Path, tmp_path: Path) -> None:
    first = Launcher(topology, tmp_path / "first.log")
    assert bookcluster(topology, "down").returncode == 0
    assert first.wait_exit() == 0
    launcher = Launcher(topology, tmp_path / "second.log")
    assert "catalog already present" in launcher.log.read_text()
    procs = status(topology)["processes"]
    launcher.proc.send_signal(signal.SIGTERM)
    assert launcher.wait_exit() == 0
    assert_nothing_left(procs)


def test_down_after_a_child_crashed_and_wipe(topology: Path, tmp_path: Path) -> None:
    launcher = Launcher(topology, tmp_path / "up.log")
    procs = status(topology)["processes"]
    replica = next(p for p in procs if p["role"] == "redis-replica")
    os.kill(replica["pid"], signal.SIGKILL)
    time.sleep(1.5)
    warning = next(line for line in launcher.log.read_text().splitlines()
                   if "exited" in line)
    assert replica["name"] in warning and "(log: " in warning, warning
    assert bookcluster(topology, "status").returncode == 1  # a process is down
    assert bookcluster(topology, "down", "--wipe").returncode == 0
    launcher.wait_exit()
    assert_nothing_left(procs)
    assert not (tmp_path / "run").exists()


def test_second_up_is_refused_and_a_killed_launcher_takes_its_children_along(
        topology: Path, tmp_path: Path) -> None:
    """Two checks on one running cluster (each start costs ~15 s of the suite): a second
    `up` is refused while it runs, and a SIGKILLed launcher leaves no child behind."""
    launcher = Launcher(topology, tmp_path / "up.log")
    second = subprocess.run(
        [sys.executable, "-m", "bookcluster", "--topology", str(topology), "up"],
        capture_output=True, text=True, timeout=60, check=False)
    assert second.returncode == 2 and "already running" in second.stderr
    procs = status(topology)["processes"]
    launcher.proc.kill()
    launcher.wait_exit()
    assert_nothing_left(procs)
    result = bookcluster(topology, "down")
    assert result.returncode == 0


def test_busy_ports_are_named_with_their_holder_before_anything_starts(
        topology: Path, tmp_path: Path) -> None:
    """Two ports of the topology taken (a node's, a Redis master's): `up` names both and
    this process as their holder, and starts nothing."""
    planned = load_topology(topology)
    region = planned.region("north")
    taken = [region.nodes[0], region.redis_master]
    holders = []
    for ep in taken:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ep.host, ep.port))
        sock.listen()
        holders.append(sock)
    try:
        began = time.monotonic()
        result = bookcluster(topology, "up", "--catalog", "small")
        print(f"bookcluster up refused in {time.monotonic() - began:.1f}s:\n{result.stderr}")
    finally:
        for sock in holders:
            sock.close()
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: nothing started: 2 ports of the topology in use")
    me = f"held by pid {os.getpid()} "
    assert f"{taken[0]} (north.nodes[0]): {me}" in result.stderr
    assert f"{taken[1]} (north.redis.master): {me}" in result.stderr
    assert "[redis]" not in result.stdout  # no step began
    assert not (tmp_path / "run" / STATE_FILE).exists()
    assert not list((tmp_path / "run").glob("logs/*.log"))


def test_bad_topology_is_reported_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("epoch: 1\nregions:\n  north: {}\n")
    result = bookcluster(path, "up")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "regions.north.redis" in result.stderr
    assert "Traceback" not in result.stderr
