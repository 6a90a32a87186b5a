"""`bookcluster up --region R`: one launcher per region, as on one host per region.

Two launchers on loopback, each with its own run folder (as two hosts would have)
and the same topology and secrets, started at once; each with its own WAN proxy
for its outgoing links. A user books a north show at a south node (forwarded
north through south's proxy), the audit passes over both, and `down --region`
stops one region while the other keeps selling.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bookcluster.topology.secrets import generate_local, secrets_dir
from tests.integration.cluster.test_launcher import READY_LINE, assert_nothing_left
from tests.integration.support import topology_yaml

REGIONS = ("north", "south")


def cli(topology: Path, run_dir: Path, *args: str,
        timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bookcluster", "--topology", str(topology),
                           "--run-dir", str(run_dir), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


class RegionLauncher:
    """`bookcluster up --region R` in the background, its output in a file."""

    def __init__(self, topology: Path, run_dir: Path, region: str, log: Path) -> None:
        self.log, self.run_dir, self.region = log, run_dir, region
        with open(log, "w") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bookcluster", "--topology", str(topology), "--run-dir",
                 str(run_dir), "up", "--region", region, "--catalog", "small",
                 "--wan-delay", "10ms"],
                stdout=handle, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while READY_LINE not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"{self.region}: up did not start:\n{self.log.read_text()}")
            time.sleep(0.3)
        return self.log.read_text()


def status(topology: Path, run_dir: Path, *args: str) -> dict[str, Any]:
    return json.loads(cli(topology, run_dir, "status", "--json", *args).stdout)  # type: ignore[no-any-return]


@pytest.fixture
def hosts() -> Iterator[tuple[Path, dict[str, Path]]]:
    """The topology and a run folder per region, sharing one set of secrets."""
    with tempfile.TemporaryDirectory(prefix="bookcluster-regions-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # PostgreSQL's user must reach its data
        topology = root / "topology.yaml"
        topology.write_text(topology_yaml(root / "unused", regions=REGIONS, nodes=1,
                                          workers=True))
        run_dirs = {r: root / f"host-{r}" for r in REGIONS}
        generate_local(run_dirs["north"])
        shutil.copytree(secrets_dir(run_dirs["north"]), secrets_dir(run_dirs["south"]))
        yield topology, run_dirs
        for run_dir in run_dirs.values():
            cli(topology, run_dir, "down")  # whatever a failed test left running


def test_two_regions_started_apart_sell_across_and_stop_apart(
        hosts: tuple[Path, dict[str, Path]]) -> None:
    topology, run_dirs = hosts
    launchers = {r: RegionLauncher(topology, run_dirs[r], r, run_dirs[r].parent / f"{r}.log")
                 for r in REGIONS}  # at once, like two hosts booting
    outputs = {r: launchers[r].wait_ready() for r in REGIONS}
    assert "north: " in outputs["north"] and "south: " not in outputs["north"].split(
        "[catalog]")[1].split("[nodes]")[0]
    assert "payments.gateway" in outputs["north"] and "payments.gateway" not in outputs["south"]

    north = status(topology, run_dirs["north"])
    assert north["regions"] == ["north"]
    names = sorted(p["name"] for p in north["processes"])
    assert names == sorted([
        "north.redis.master", "north.redis.replica.north", "north.redis.replica.south",
        "north.redis.sentinel", "north.etcd", "north.postgres.1", "north.node.1",
        "north.worker", "payments.gateway", "wan.proxy"]), names
    deadline = time.monotonic() + 30  # north's replica of south's master links up late
    while not all(p["healthy"] for p in north["processes"]) and time.monotonic() < deadline:
        time.sleep(1)
        north = status(topology, run_dirs["north"])
    assert all(p["healthy"] for p in north["processes"]), north["processes"]
    only_south = status(topology, run_dirs["south"], "--region", "south")["processes"]
    assert {p["region"] for p in only_south} == {"south"}

    flow = subprocess.run(
        [sys.executable, "-m", "tests.integration.cluster.multihost_flow",
         "--topology", str(topology),
         "--run-dir", str(run_dirs["south"]), "--entry", "south", "--home", "north",
         "--count", "3"], capture_output=True, text=True, timeout=120, check=False)
    assert flow.returncode == 0, flow.stderr
    result = json.loads(flow.stdout.strip().splitlines()[-1])
    assert result["sold"] == 3 and result["home_regions"] == ["north"], result
    # Through south's proxy to north's node: at least the WAN delay there and back.
    assert result["hold_ms"]["p50"] >= 20, result

    audit = cli(topology, run_dirs["south"], "audit", "--json", timeout=120)
    assert audit.returncode == 0, audit.stdout + audit.stderr

    refused = cli(topology, run_dirs["north"], "down", "--region", "south")
    assert refused.returncode == 2 and "runs north" in refused.stderr
    south_procs = status(topology, run_dirs["south"])["processes"]
    assert cli(topology, run_dirs["south"], "down", "--region", "south").returncode == 0
    assert launchers["south"].proc.wait(60) == 0
    assert_nothing_left(south_procs)
    assert launchers["north"].proc.poll() is None  # north goes on without south
    north_procs = status(topology, run_dirs["north"])["processes"]
    assert cli(topology, run_dirs["north"], "down").returncode == 0
    assert launchers["north"].proc.wait(60) == 0
    assert_nothing_left(north_procs)


def test_restarted_region_is_not_seeded_again(hosts: tuple[Path, dict[str, Path]]) -> None:
    """North alone: a topology of north only (with south in it, a fresh north would wait
    for south's PostgreSQL to check that it owns none of north's theatres)."""
    _, run_dirs = hosts
    topology = run_dirs["north"].parent / "north-only.yaml"
    topology.write_text(topology_yaml(run_dirs["north"].parent / "unused", regions=("north",),
                                      nodes=1, workers=True))
    log = run_dirs["north"].parent / "north.log"
    first = RegionLauncher(topology, run_dirs["north"], "north", log)
    assert "shows in catalog" in first.wait_ready()
    assert cli(topology, run_dirs["north"], "down").returncode == 0
    assert first.proc.wait(60) == 0
    again = RegionLauncher(topology, run_dirs["north"], "north", log)
    assert "north: catalog already present, not seeding" in again.wait_ready()
    assert cli(topology, run_dirs["north"], "down").returncode == 0
    assert again.proc.wait(60) == 0


def test_unknown_region_is_refused(hosts: tuple[Path, dict[str, Path]]) -> None:
    topology, run_dirs = hosts
    result = cli(topology, run_dirs["north"], "up", "--region", "east")
    assert result.returncode == 2 and "unknown region(s) east" in result.stderr
