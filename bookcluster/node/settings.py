"""A node's settings: the topology plus its own place in it, read once at the entry point."""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from bookcluster.node.admission import IN_FLIGHT, QUEUED
from bookcluster.stores.connections import load_routes
from bookcluster.topology.load import load_topology
from bookcluster.topology.model import Endpoint, Topology, duration_arg

# Slow clients (slowloris): seconds a client has to send a request's headers
# (`server.py` closes the connection) and then its body (`body.py`: 408).
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 10.0
# How often a node looks for a topology epoch applied while it was not listening.
TOPOLOGY_POLL_S = 5.0


@dataclass(frozen=True)
class NodeSettings:
    topology: Topology
    region: str
    host: str
    port: int
    routes: dict[str, Endpoint] = field(default_factory=dict)
    header_timeout_s: float = HEADER_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S
    topology_poll_s: float = TOPOLOGY_POLL_S
    write_slots: int = IN_FLIGHT
    write_queue: int = QUEUED
    # `POST /auth/dev-sign-in` (a token for any name): only on loopback, turned on by the
    # local launcher (`--dev-sign-in`), never by the topology.
    dev_sign_in: bool = False
    # One JSON line per request (`requestlog.py`): `--access-log`, or the topology's
    # `settings.access_log` (either turns it on).
    access_log: bool = False

    @property
    def name(self) -> str:
        return f"{self.region}@{self.host}:{self.port}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bookcluster.node",
                                description="bookcluster app node")
    p.add_argument("--topology", type=Path, default=Path("topology.yaml"))
    p.add_argument("--region", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--run-dir", type=Path, help="override settings.run_dir")
    p.add_argument("--hold-ttl", type=duration_arg, help="override settings.hold_ttl, e.g. 5s")
    p.add_argument("--wan-routes", type=Path, help="routes through the WAN proxy (launcher)")
    p.add_argument("--header-timeout", type=duration_arg, default=HEADER_TIMEOUT_S,
                   help="close a client that has not sent its request headers within this "
                        f"(default {HEADER_TIMEOUT_S:g}s)")
    p.add_argument("--body-timeout", type=duration_arg, default=BODY_TIMEOUT_S,
                   help="answer 408 to a body that has not arrived within this "
                        f"(default {BODY_TIMEOUT_S:g}s)")
    p.add_argument("--topology-poll", type=duration_arg, default=TOPOLOGY_POLL_S,
                   help="look for a newer applied topology epoch this often "
                        f"(default {TOPOLOGY_POLL_S:g}s)")
    p.add_argument("--write-slots", type=int, default=IN_FLIGHT,
                   help=f"writes running at once on this node (default {IN_FLIGHT})")
    p.add_argument("--write-queue", type=int, default=QUEUED,
                   help=f"writes waiting on this node (default {QUEUED})")
    p.add_argument("--dev-sign-in", action="store_true",
                   help="serve POST /auth/dev-sign-in, a token for any user name (the local "
                        "launcher's, when every node binds loopback); refused on any other "
                        "address")
    p.add_argument("--access-log", action="store_true",
                   help="write one JSON line per request to the log (as settings.access_log: "
                        "true in the topology)")
    return p


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (a name other than `localhost`
    could resolve anywhere: no)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dev_sign_in_refusal(host: str, topology: Topology) -> str | None:
    """Why a node at `host` must not serve development sign-in, or None."""
    if not is_loopback(host):
        return (f"--dev-sign-in hands an operator token to whoever asks: only a node bound "
                f"to loopback may serve it, not one bound to {host}")
    if topology.auth.algorithm != "HS256":
        return (f"--dev-sign-in mints HS256 tokens; with auth.algorithm "
                f"{topology.auth.algorithm} users sign in at the identity provider")
    return None


def from_args(argv: list[str] | None = None) -> NodeSettings:
    args = parser().parse_args(argv)
    topology = load_topology(args.topology, run_dir=args.run_dir)
    if args.region not in topology.regions:
        parser().error(f"--region {args.region!r} is not in {topology.path}")
    if args.header_timeout <= 0 or args.body_timeout <= 0 or args.topology_poll <= 0:
        parser().error("--header-timeout, --body-timeout and --topology-poll must be positive")
    if args.write_slots < 1 or args.write_queue < 0:
        parser().error("--write-slots must be positive, --write-queue not negative")
    overrides = {}
    if args.hold_ttl is not None:
        overrides["hold_ttl_s"] = args.hold_ttl
    if overrides:
        topology = topology.with_settings(**overrides)
    if args.dev_sign_in:
        refusal = dev_sign_in_refusal(args.host, topology)
        if refusal is not None:
            parser().error(refusal)
    routes = load_routes(args.wan_routes) if args.wan_routes else {}
    return NodeSettings(topology, args.region, args.host, args.port, routes,
                        args.header_timeout, args.body_timeout, args.topology_poll,
                        args.write_slots, args.write_queue, args.dev_sign_in,
                        args.access_log)
