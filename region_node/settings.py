"""A node's settings: the topology plus its own place in it, read once at the entry point."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from router.registry import load_routes
from router.topology import Endpoint, Topology, duration_arg, load_topology


@dataclass(frozen=True)
class NodeSettings:
    topology: Topology
    region: str
    host: str
    port: int
    routes: dict[str, Endpoint] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.region}@{self.host}:{self.port}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m region_node", description="bookcluster app node")
    p.add_argument("--topology", type=Path, default=Path("topology.yaml"))
    p.add_argument("--region", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--run-dir", type=Path, help="override settings.run_dir")
    p.add_argument("--hold-ttl", type=duration_arg, help="override settings.hold_ttl, e.g. 5s")
    p.add_argument("--wan-routes", type=Path, help="routes through the WAN proxy (launcher)")
    return p


def from_args(argv: list[str] | None = None) -> NodeSettings:
    args = parser().parse_args(argv)
    topology = load_topology(args.topology, run_dir=args.run_dir)
    if args.region not in topology.regions:
        parser().error(f"--region {args.region!r} is not in {topology.path}")
    overrides = {}
    if args.hold_ttl is not None:
        overrides["hold_ttl_s"] = args.hold_ttl
    if overrides:
        topology = topology.with_settings(**overrides)
    routes = load_routes(args.wan_routes) if args.wan_routes else {}
    return NodeSettings(topology, args.region, args.host, args.port, routes)
