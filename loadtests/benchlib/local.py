"""The bench's own servers on this machine: a LocalCluster, a trivial aiohttp app, and
where their CPU time goes.

The cluster runs from a generated topology on free loopback ports in a temporary run
folder (mode 0755: PostgreSQL's unprivileged user must reach its data when we are
root), with the payment gateway simulator and the default abuse limits; the launcher
generates its secrets there. Every theatre's home is the region of its city, so each
region has shows.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from cluster.demo_catalog import CITIES, Catalog, CatalogSpec, build_catalog, slug
from cluster.faults import process_tree
from cluster.health import scrape_metric, wait_healthy
from cluster.launcher import LocalCluster
from cluster.loopback import topology_yaml
from cluster.ports import free_ports
from cluster.supervisor import Child, ProcessSpec, Supervisor
from router.placement import Placement
from router.secrets import Secrets
from router.topology import Topology, load_topology

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def theatre_homes(spec: CatalogSpec) -> dict[str, str]:
    """theatre id -> the region of its city (the demo catalog's own hint)."""
    return {f"{slug(city)}-{n:02d}": region
            for region, cities in CITIES.items()
            for city, _state, _ in cities[: spec.cities_per_region]
            for n in range(1, spec.theatres_per_city + 1)}


@dataclass
class BenchCluster:
    launcher: LocalCluster
    topology: Topology
    catalog: Catalog
    wan_delay_ms: int
    placement: Placement = field(init=False)
    _home: dict[int, str] = field(init=False)
    _free: dict[str, list[str]] = field(init=False)

    def __post_init__(self) -> None:
        self.placement = Placement(self.topology)
        theatre_of = self.catalog.theatre_of_screen()
        self._home = {s.id: self.placement.region_of(theatre_of[s.screen_id])
                      for s in self.catalog.shows}
        self._free = {}
        for seat in self.catalog.seats:
            if not seat.blocked:
                self._free.setdefault(seat.screen_id, []).append(seat.seat_id)

    def nodes(self, region: str | None = None) -> list[str]:
        regions = [region] if region else list(self.topology.regions)
        return [f"http://{ep.host}:{ep.port}"
                for r in regions for ep in self.topology.region(r).nodes]

    def shows(self, region: str | None = None) -> list[int]:
        return sorted(s for s, home in self._home.items() if region in (None, home))

    def home_of(self, show: int) -> str:
        return self._home[show]

    def seats_of(self, show: int) -> list[str]:
        """The show's seats that are for sale, in layout order."""
        screen = next(s.screen_id for s in self.catalog.shows if s.id == show)
        return list(self._free[screen])


def _run_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="bookcluster-bench-"))
    folder.chmod(0o755)  # PostgreSQL's unprivileged user must reach its data
    return folder


@asynccontextmanager
async def bench_cluster(*, spec: CatalogSpec, nodes: int, durable: bool, workers: bool,
                        wan_delay_ms: int, progress: Callable[[str], None]
                        ) -> AsyncIterator[BenchCluster]:
    """A fresh cluster; `wan_delay_ms` 0 means direct links (no WAN proxy at all)."""
    folder = _run_folder()
    try:
        path = folder / "topology.yaml"
        path.write_text(topology_yaml(folder / "run", nodes=nodes, durable=durable,
                                      workers=workers, payments=True,
                                      theatres=theatre_homes(spec)))
        topology = load_topology(path)
        launcher = LocalCluster(topology, catalog=spec, progress=progress,
                                wan_delay_ms=wan_delay_ms or None)
        await launcher.start()
        try:
            yield BenchCluster(launcher, topology, build_catalog(spec, date.today()),
                               wan_delay_ms)
        finally:
            launcher.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class AuxServers:
    """Processes the bench starts besides the cluster, stopped by PID in `stop()`."""

    def __init__(self, folder: Path, secrets: Secrets) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.secrets = secrets  # to probe servers that need a password
        self.supervisor = Supervisor(folder)

    async def start(self, spec: ProcessSpec, timeout_s: float = 60.0,
                    probe_address: str | None = None) -> Child:
        child = self.supervisor.start(spec)
        record = {**spec.__dict__, "log_path": str(spec.log_path),
                  "address": probe_address or spec.address}
        await wait_healthy(record, timeout_s, alive=lambda: child.popen.poll() is None,
                           secrets=self.secrets)
        return child

    async def trivial_server(self) -> Child:
        port = free_ports(1)[0]
        spec = ProcessSpec(
            name="bench.trivial", region="-", role="node", host="127.0.0.1", port=port,
            argv=(sys.executable, str(HERE / "trivial.py"), "--port", str(port)),
            log_path=self.folder / "logs" / "trivial.log", address=f"http://127.0.0.1:{port}")
        return await self.start(spec)

    def stop(self) -> None:
        self.supervisor.stop()


# -- where the CPU goes ----------------------------------------------------------

def _cpu_ticks(pid: int, with_children: bool) -> int:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if with_children:  # reaped children, e.g. PostgreSQL backends that exited
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def cpu_groups(cluster: BenchCluster) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    names = {"node": "nodes", "redis-master": "redis", "redis-replica": "redis",
             "pg-member": "postgres", "etcd": "etcd", "wanproxy": "wan proxy",
             "worker": "workers", "gateway": "gateway"}
    for child in cluster.launcher.supervisor.children:
        groups.setdefault(names.get(child.spec.role, child.spec.role), []).append(child.pid)
    return groups


def cpu_seconds(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each group: its processes and all their descendants."""
    out = {}
    for name, pids in groups.items():
        ticks = 0
        for pid in pids:
            tree = process_tree(pid)
            ticks += _cpu_ticks(pid, True) + sum(_cpu_ticks(p, False) for p in tree[1:])
        out[name] = ticks / CLK_TCK
    return out


def cpu_share(before: dict[str, float], after: dict[str, float], client_cpu_s: float,
              elapsed_s: float) -> dict[str, Any]:
    """CPU seconds per group over a phase, with the load generators as `client`."""
    used = {name: round(after[name] - before.get(name, 0.0), 2) for name in after}
    used["client"] = round(client_cpu_s, 2)
    total = sum(used.values())
    cores = os.cpu_count() or 1
    return {"cpu_s": used, "busy_share_of_machine": round(total / (elapsed_s * cores), 3)
            if elapsed_s > 0 else None,
            "share": {n: round(v / total, 3) if total else None for n, v in used.items()}}


# -- node metrics ----------------------------------------------------------------

async def histogram(http: aiohttp.ClientSession, nodes: list[str], name: str,
                    **labels: str) -> tuple[float, float]:
    """(sum, count) of a histogram over `nodes`, for samples whose labels include `labels`."""
    total, count = 0.0, 0.0
    for node in nodes:
        async with http.get(f"{node}/metrics") as resp:
            text = await resp.text()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if not all(sample.labels.get(k) == v for k, v in labels.items()):
                    continue
                if sample.name == f"{name}_sum":
                    total += sample.value
                elif sample.name == f"{name}_count":
                    count += sample.value
    return total, count


async def counter(http: aiohttp.ClientSession, nodes: list[str], name: str,
                  **labels: str) -> float:
    """Sum of a metric over nodes."""
    return sum([await scrape_metric(http, node, name, **labels) for node in nodes])
