"""WAN delay for the local cluster: which cross-region links go through `wanproxy`.

With `bookcluster up --wan-delay 40ms`, every cross-region connection pays a
real one-way delay: a node's connections to another region's nodes (writes
are forwarded there), Redis master (and the replica Sentinel may promote in its
place), Sentinel and PostgreSQL members, and each replica's link to another
region's master. After a failover, Sentinel points replicas at the new master
directly: their links no longer pass through the proxy. The launcher starts
one `bookcluster.devsim.wanproxy` process with a listener per (region, remote target), and
writes `routes.json` that nodes read (`--wan-routes`) to dial the proxy instead
of the target.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bookcluster.local.ports import free_ports, topology_ports
from bookcluster.local.supervisor import ProcessSpec
from bookcluster.stores.connections import route_key
from bookcluster.topology.model import Endpoint, Topology


@dataclass(frozen=True)
class WanPlan:
    links: list[dict[str, Any]]
    routes: dict[str, str]  # route_key(from_region, target) -> "host:port" of the proxy
    control_port: int

    def route(self, from_region: str, target: Endpoint) -> Endpoint:
        via = self.routes.get(route_key(from_region, target))
        if via is None:
            return target
        host, _, port = via.partition(":")
        return Endpoint(host, int(port))


def plan(topology: Topology, delay_ms: int, local_regions: Sequence[str] | None = None) -> WanPlan:
    """Links from `local_regions` (default: every region) to every other region: a host
    that runs one region (`up --region`) proxies only its own outgoing links."""
    targets: list[tuple[str, str, Endpoint]] = []  # (from region, label, target)
    for local in local_regions or topology.regions:
        for name, remote in topology.regions.items():
            if name == local:
                continue
            targets.append((local, f"{name}.redis.master", remote.redis_master))
            # Sentinel may promote the master's replica in its region: dial it the same way.
            targets.append((local, f"{name}.redis.replica.{name}", remote.redis_replicas[name]))
            if remote.redis_sentinel is not None:
                targets.append((local, f"{name}.redis.sentinel", remote.redis_sentinel))
            # Every PostgreSQL member: either may be the primary (Patroni).
            targets += [(local, f"{name}.postgres.{slot}", ep) for slot, ep
                        in zip(("primary", "standby"), remote.pg_members, strict=False)]
            # Writes for the remote region's theatres are forwarded to its nodes.
            targets += [(local, f"{name}.node.{i + 1}", ep) for i, ep in enumerate(remote.nodes)]
    # Not a port of the topology: its PostgreSQL members and nodes bind theirs only after
    # the proxy started.
    ports = free_ports(len(targets) + 1, avoid=topology_ports(topology))
    links, routes = [], {}
    for (local, label, target), port in zip(targets, ports, strict=False):
        links.append({"name": f"{local}->{label}", "listen_host": "127.0.0.1",
                      "listen_port": port, "target_host": target.host,
                      "target_port": target.port, "delay_ms": delay_ms})
        routes[route_key(local, target)] = f"127.0.0.1:{port}"
    return WanPlan(links, routes, ports[-1])


def write(plan_: WanPlan, run_dir: Path) -> tuple[Path, Path]:
    folder = run_dir / "wan"
    folder.mkdir(parents=True, exist_ok=True)
    links, routes = folder / "links.json", folder / "routes.json"
    links.write_text(json.dumps({"links": plan_.links}, indent=2))
    routes.write_text(json.dumps(plan_.routes, indent=2))
    return links, routes


def proxy_spec(plan_: WanPlan, links_file: Path, run_dir: Path, repo_root: Path) -> ProcessSpec:
    return ProcessSpec(
        name="wan.proxy", region="-", role="wanproxy", host="127.0.0.1",
        port=plan_.control_port,
        argv=(sys.executable, "-m", "bookcluster.devsim.wanproxy", "--config", str(links_file),
              "--control-port", str(plan_.control_port)),
        log_path=run_dir / "logs" / "wan.proxy.log",
        address=f"http://127.0.0.1:{plan_.control_port}",
        env={"PYTHONPATH": str(repo_root)})
