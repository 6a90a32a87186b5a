"""`bookcluster run/probe/setup`: a region as containers run it, one process each, no
launcher (compose/). Here as plain processes on loopback, started in the order compose
starts them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bookcluster.topology.secrets import generate_local
from tests.integration.support import topology_yaml

PROCESSES = ["north.redis.master", "north.redis.replica.north", "north.redis.sentinel",
             "north.etcd", "north.postgres.1"]


def cli(topology: Path, *args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bookcluster", "--topology", str(topology), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def region() -> Iterator[tuple[Path, list[subprocess.Popen[bytes]]]]:
    with tempfile.TemporaryDirectory(prefix="bookcluster-service-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        topology = root / "topology.yaml"
        topology.write_text(topology_yaml(root / "run", regions=("north",), nodes=1))
        generate_local(root / "run")
        procs: list[subprocess.Popen[bytes]] = []
        yield topology, procs
        for proc in reversed(procs):  # each is its own process group (the reaper's too)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def start(topology: Path, name: str, procs: list[subprocess.Popen[bytes]]) -> None:
    log = topology.parent / f"{name}.log"
    with open(log, "w") as out:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "bookcluster", "--topology", str(topology), "run", name],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True))


def wait_healthy(topology: Path, name: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = cli(topology, "probe", name)
        if result.returncode == 0:
            return
        if time.monotonic() > deadline:
            log = (topology.parent / f"{name}.log").read_text()
            raise AssertionError(f"{name}: {result.stdout}{result.stderr}\n{log}")
        time.sleep(0.5)


def test_a_region_from_single_processes_run_probe_setup(
        region: tuple[Path, list[subprocess.Popen[bytes]]]) -> None:
    topology, procs = region
    unknown = cli(topology, "run", "north.redis.nothing")
    assert unknown.returncode == 2 and "known: north.redis.master" in unknown.stderr
    for name in PROCESSES[:4]:
        start(topology, name, procs)
    for name in PROCESSES[:4]:
        wait_healthy(topology, name)
    # Two set-ups at once (two hosts, an init container and an operator): each logs in
    # to etcd, waits for Patroni's leader (which retries its login meanwhile), then
    # under the region's lock one seeds and the other finds it seeded.
    setups = [subprocess.Popen([sys.executable, "-m", "bookcluster", "--topology", str(topology),
                                "setup", "--region", "north", "--catalog", "small"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for _ in range(2)]
    start(topology, "north.postgres.1", procs)
    outs = [setup.communicate(timeout=150)[0] for setup in setups]
    assert [setup.returncode for setup in setups] == [0, 0], outs
    both = "\n".join(outs)
    assert "etcd now requires a login" in both, both
    assert both.count("shows in catalog") == 1, both
    assert both.count("catalog already present, not seeding") == 1, both
    wait_healthy(topology, "north.postgres.1")
    start(topology, "north.node.1", procs)
    wait_healthy(topology, "north.node.1")
    again = cli(topology, "setup", "--region", "north")
    assert again.returncode == 0 and "catalog already present" in again.stdout, again
    # A probe never rewrites the files of what it checks: the sentinel keeps its own.
    conf = topology.parent / "run" / "north" / "redis-sentinel" / "sentinel.conf"
    before = conf.stat().st_mtime_ns
    assert cli(topology, "probe", "north.redis.sentinel").returncode == 0
    assert conf.stat().st_mtime_ns == before
    # The containers' cheap check agrees, from what `run` recorded.
    for name in [*PROCESSES, "north.node.1"]:
        check = subprocess.run([sys.executable, "-m", "bookcluster.deploy.health_check",
                                str(topology.parent / "run"), name],
                               capture_output=True, text=True, timeout=30, check=False)
        assert check.returncode == 0 and check.stdout.strip() == "healthy", (name, check)
    os.killpg(procs[0].pid, signal.SIGSTOP)  # the master stops answering
    try:
        check = subprocess.run([sys.executable, "-m", "bookcluster.deploy.health_check",
                                str(topology.parent / "run"), "north.redis.master"],
                               capture_output=True, text=True, timeout=30, check=False)
        assert check.returncode == 1 and "unhealthy" in check.stdout, check
    finally:
        os.killpg(procs[0].pid, signal.SIGCONT)
