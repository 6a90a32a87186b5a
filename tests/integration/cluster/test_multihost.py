"""A real multi-host run: three network namespaces as three hosts, one region each.

Each host runs `bookcluster up --region R` (under `ip netns exec`) from the same
topology, whose addresses are the hosts' own (10.250.0.1-3 on a bridge in a
namespace of its own: see `tests/integration/cluster/netns.py`; they are used only from inside
the namespaces). Cross-region links pay a WAN delay through each host's own WAN
proxy (there is no tc netem here). From inside the south host, users book north
shows at a south node; then north's Redis master is killed and the sentinels of
the three hosts fail it over to north's replica; the audit passes. Figures are
printed (run with -s): hold and confirm latencies across hosts, failover time.

About 50 s on the shared 2-core box (three regions starting at once take ~13 s):
the `short` case (5 users per flow) runs with the suite, the `full` one (40) on
demand: `.venv/bin/pytest -m slow -s tests/integration/cluster/test_multihost.py`. Needs root
and `ip netns`; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bookcluster.topology.secrets import generate_local, secrets_dir
from tests.integration.cluster import netns
from tests.integration.cluster.test_launcher import READY_LINE
from tests.integration.support import topology_yaml

REGIONS = ("north", "south", "west")
WAN_DELAY = "20ms"
REPO = Path(__file__).resolve().parents[3]


def on_hosts(text: str, address: dict[str, str]) -> str:
    """The loopback topology `text` with each region's addresses on its own host (the
    gateway on north's)."""
    doc = yaml.safe_load(text)

    def moved(value: Any, host: str) -> Any:
        if isinstance(value, str):
            return value.replace("127.0.0.1", host)
        if isinstance(value, list):
            return [moved(v, host) for v in value]
        if isinstance(value, dict):
            return {k: moved(v, host) for k, v in value.items()}
        return value

    for name, region in doc["regions"].items():
        doc["regions"][name] = moved(region, address[name])
    doc["payments"]["gateway"] = moved(doc["payments"]["gateway"], address[REGIONS[0]])
    return yaml.safe_dump(doc, sort_keys=False)


class Cluster:
    def __init__(self, hosts: netns.Hosts, root: Path) -> None:
        self.hosts, self.root = hosts, root
        self.topology = root / "topology.yaml"
        self.run_dirs = {r: root / f"host-{r}" for r in REGIONS}
        self.launchers: dict[str, Any] = {}

    def cli(self, region: str, *args: str, timeout: float = 120) -> Any:
        return self.hosts.run(region, [sys.executable, "-m", "bookcluster", "--topology",
                                       str(self.topology), "--run-dir",
                                       str(self.run_dirs[region]), *args], timeout=timeout)

    def python(self, region: str, module: str, *args: str, timeout: float = 150) -> Any:
        return self.hosts.run(region, [sys.executable, "-m", module, *args], timeout=timeout)

    def up(self) -> dict[str, float]:
        began = time.monotonic()
        for region in REGIONS:  # at once, like three hosts booting
            self.launchers[region] = self.hosts.popen(
                region, [sys.executable, "-m", "bookcluster", "--topology", str(self.topology),
                         "--run-dir", str(self.run_dirs[region]), "up", "--region", region,
                         "--catalog", "small", "--wan-delay", WAN_DELAY],
                self.root / f"{region}.log")
        took = {}
        for region in REGIONS:
            log = self.root / f"{region}.log"
            deadline = time.monotonic() + 300
            while READY_LINE not in log.read_text():
                if self.launchers[region].poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{region}: up did not start:\n{log.read_text()}")
                time.sleep(0.3)
            took[region] = round(time.monotonic() - began, 1)
        return took

    def status(self, region: str) -> dict[str, Any]:
        result = self.cli(region, "status", "--json")
        return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    why = netns.unavailable()
    if why is not None:
        pytest.skip(f"multi-host run needs network namespaces: {why}")
    with tempfile.TemporaryDirectory(prefix="bookcluster-multihost-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # PostgreSQL's user must reach its data
        hosts = netns.Hosts(f"bcmh{os.getpid() % 100000}", REGIONS)
        try:
            hosts.create()
            made = Cluster(hosts, root)
            made.topology.write_text(on_hosts(
                topology_yaml(root / "unused", regions=REGIONS, nodes=1, workers=True,
                              redis_down_after="1s"), hosts.address))
            generate_local(made.run_dirs[REGIONS[0]])  # one set of secrets, on every host
            for region in REGIONS[1:]:
                shutil.copytree(secrets_dir(made.run_dirs[REGIONS[0]]),
                                secrets_dir(made.run_dirs[region]))
            yield made
            for region in REGIONS:
                made.cli(region, "down", timeout=90)
        finally:
            hosts.destroy()


def flow(cluster: Cluster, entry: str, home: str, count: int) -> dict[str, Any]:
    result = cluster.python(entry, "tests.integration.cluster.multihost_flow", "--topology",
                            str(cluster.topology), "--run-dir", str(cluster.run_dirs[entry]),
                            "--entry", entry, "--home", home, "--count", str(count))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("count", [pytest.param(5, id="short"),
                                   pytest.param(40, id="full", marks=pytest.mark.slow)])
def test_three_hosts_sell_across_fail_over_and_pass_the_audit(cluster: Cluster,
                                                              count: int) -> None:
    started = cluster.up()
    north = cluster.status("north")
    assert north["regions"] == ["north"]
    assert {p["host"] for p in north["processes"] if p["region"] == "north"} == {"10.250.0.1"}

    across = flow(cluster, "south", "north", count)  # south host's node forwards to north
    at_home = flow(cluster, "north", "north", count)
    assert across["sold"] == count and across["home_regions"] == ["north"], across
    assert at_home["sold"] == count, at_home
    # The forward crosses the WAN there and back; a home write does not.
    assert across["hold_ms"]["p50"] >= 40 > at_home["hold_ms"]["p50"], (across, at_home)

    master = next(p for p in north["processes"] if p["name"] == "north.redis.master")
    killed_at = time.time()
    os.kill(master["pid"], signal.SIGKILL)
    probe = cluster.python("south", "tests.integration.cluster.multihost_flow", "--topology",
                           str(cluster.topology), "--run-dir", str(cluster.run_dirs["south"]),
                           "--entry", "south", "--home", "north",
                           "--until-writable-since", str(killed_at))
    assert probe.returncode == 0, probe.stderr
    failover = json.loads(probe.stdout.strip().splitlines()[-1])
    assert failover["writable_after_s"] is not None, failover
    # The sentinel that led the failover knows first; west's hears of it within seconds.
    deadline = time.monotonic() + 20
    while True:
        masters = cluster.status("west")["redis_masters"]  # as west's sentinel sees them
        if masters["north"]["server"] == "north.redis.replica.north" \
                or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert masters["north"]["server"] == "north.redis.replica.north", masters

    # The other hosts' replicas of north follow the new master (Sentinel repoints them;
    # seat maps read in south and west come from them).
    new_master = masters["north"]["address"]
    deadline = time.monotonic() + 30
    while True:
        followers = {r: next(p for p in cluster.status(r)["processes"]
                             if p["name"] == f"{r}.redis.replica.north")
                     for r in ("south", "west")}
        if all(f["master"] == new_master and f["link"] == "up" for f in followers.values()) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert all(f["master"] == new_master and f["link"] == "up"
               for f in followers.values()), (new_master, followers)

    after = flow(cluster, "west", "north", 5)
    assert after["sold"] == 5, after
    # Until a region's replica of north follows the new master, that region's nodes
    # cannot hear north's changes: their seat maps of north lag for that long (about
    # 2 s here), then the reconciler's rewrite for a replica that came online resets them.
    settled = time.monotonic()
    while True:
        audit = cluster.cli("west", "audit", "--json")
        if audit.returncode == 0 or time.monotonic() - settled > 10:
            break
        time.sleep(0.5)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    clean_after = round(time.monotonic() - settled, 1)

    print(f"\nmulti-host run: three namespaces, WAN delay {WAN_DELAY} one way; "
          f"regions up after {started} s")
    for label, figures in (("south->north (forwarded)", across), ("north->north", at_home),
                           ("west->north after failover", after)):
        print(f"  {label:<28} hold p50 {figures['hold_ms']['p50']} ms, p99 "
              f"{figures['hold_ms']['p99']} ms; confirm p50 {figures['confirm_ms']['p50']} ms, "
              f"p99 {figures['confirm_ms']['p99']} ms")
    print(f"  north Redis master SIGKILLed: writes from south worked again after "
          f"{failover['writable_after_s']} s ({failover['statuses']}); audit clean "
          f"{clean_after} s after the last booking")
