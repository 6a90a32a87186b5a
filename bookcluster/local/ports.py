"""Free loopback ports, for processes the launcher adds on the fly (proxies, test nodes).

Picked below the kernel's ephemeral range, not with bind(0): a port bind(0) hands out
is free at that moment, but the same range serves the source port of every outgoing
connection, and on a busy machine (several clusters, thousands of connections) one of
them took such a port before our server bound it: EADDRINUSE in about one cluster
start in three. Below the range only another server can take it, and none is handed
out twice by one process. A port free now may still be one a process of the topology
binds later (PostgreSQL, nodes: they start after the WAN proxy), so callers pass the
topology's ports as `avoid` (`topology_ports`).
"""

from __future__ import annotations

import random
import socket
from collections.abc import Collection
from pathlib import Path

from bookcluster.topology.model import Topology

LOWEST = 10_000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def topology_ports(topology: Topology) -> set[int]:
    """Every port the topology's processes listen on (whatever their host)."""
    ports = {ep.port for region in topology.regions.values() for _, ep in region.endpoints()}
    if topology.payments is not None:
        ports.add(topology.payments.gateway.port)
    return ports


def free_ports(n: int, host: str = "127.0.0.1", avoid: Collection[int] = ()) -> list[int]:
    """n distinct ports free right now (held open together so none repeats), none of
    them in `avoid`."""
    below = _ephemeral_start()
    pick = random.SystemRandom()
    socks: list[socket.socket] = []
    try:
        for _ in range(50 * n + 1000):
            if len(socks) == n:
                break
            port = pick.randrange(LOWEST, below) if below - LOWEST > 1000 else 0
            if port in _handed_out or port in avoid:
                continue
            s = socket.socket()
            try:
                s.bind((host, port))
            except OSError:  # in use
                s.close()
                continue
            if port == 0 and (s.getsockname()[1] in avoid or s.getsockname()[1] in _handed_out):
                s.close()  # bind(0) chose it: a port of the topology, or ours already
                continue
            socks.append(s)
        if len(socks) < n:
            raise OSError(f"no {n} free ports on {host} between {LOWEST} and {below}")
        ports = [s.getsockname()[1] for s in socks]
        _handed_out.update(ports)
        return ports
    finally:
        for s in socks:
            s.close()
