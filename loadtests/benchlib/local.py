"""The bench's own servers on this machine: a LocalCluster and a trivial aiohttp app;
reading the nodes' metrics.

The cluster runs from a generated topology on free loopback ports in a temporary run
folder (mode 0755: PostgreSQL's unprivileged user must reach its data when we are
root), with the payment gateway simulator and the default abuse limits; the launcher
generates its secrets there. Every theatre's home is the region of its city, so each
region has shows.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bookcluster.local.launcher import LocalCluster
from bookcluster.local.loopback import topology_yaml
from bookcluster.local.ports import free_ports
from bookcluster.local.supervisor import Child, ProcessSpec, Supervisor
from bookcluster.ops.demo_catalog import CITIES, Catalog, CatalogSpec, build_catalog, slug
from bookcluster.stores.probe import scrape_metric, wait_healthy
from bookcluster.topology.load import load_topology
from bookcluster.topology.model import Topology
from bookcluster.topology.placement import Placement
from bookcluster.topology.secrets import Secrets

HERE = Path(__file__).resolve().parent


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
                        wan_delay_ms: int, progress: Callable[[str], None],
                        limits: str = "") -> AsyncIterator[BenchCluster]:
    """A fresh cluster; `wan_delay_ms` 0 means direct links (no WAN proxy at all);
    `limits`: YAML under the topology's `limits:` (the default abuse limits else)."""
    folder = _run_folder()
    try:
        path = folder / "topology.yaml"
        path.write_text(topology_yaml(folder / "run", nodes=nodes, durable=durable,
                                      workers=workers, payments=True,
                                      theatres=theatre_homes(spec), limits=limits))
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


# -- node metrics ----------------------------------------------------------------

LATENCY = "bookcluster_http_request_seconds"


async def node_figures(http: aiohttp.ClientSession, nodes: list[str],
                       route: tuple[str, str] | None = None) -> dict[str, Any]:
    """One scrape of every node: `route`'s (path template, method) latency sum and
    count, each node's cached shows, the shows whose changes they subscribe to, seat
    cache lookups by result, holds by outcome and writes shed by reason (summed)."""
    out: dict[str, Any] = {"latency_s": 0.0, "served": 0.0, "cached_shows": [],
                           "subscribed_shows": 0, "lookups": Counter(), "holds": Counter(),
                           "shed": Counter()}
    for node in nodes:
        async with http.get(f"{node}/metrics") as resp:
            text = await resp.text()
        cached = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name, labels = sample.name, sample.labels
                if name.startswith(LATENCY):
                    if route and (labels.get("route"), labels.get("method")) == route:
                        if name == f"{LATENCY}_sum":
                            out["latency_s"] += sample.value
                        elif name == f"{LATENCY}_count":
                            out["served"] += sample.value
                elif name == "bookcluster_seat_cache_entries":
                    cached = sample.value
                elif name == "bookcluster_listener_shows":
                    out["subscribed_shows"] += int(sample.value)
                elif name == "bookcluster_seat_cache_lookups_total":
                    out["lookups"][labels["result"]] += int(sample.value)
                elif name == "bookcluster_holds_total":
                    out["holds"][labels["outcome"]] += int(sample.value)
                elif name == "bookcluster_writes_shed_total":
                    out["shed"][labels["reason"]] += int(sample.value)
        out["cached_shows"].append(int(cached))
    return out


async def counter(http: aiohttp.ClientSession, nodes: list[str], name: str,
                  **labels: str) -> float:
    """Sum of a metric over nodes."""
    return sum([await scrape_metric(http, node, name, **labels) for node in nodes])
