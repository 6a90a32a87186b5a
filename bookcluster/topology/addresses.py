"""The topology's addresses as servers need them: any host name or IP, not only loopback.

The local cluster puts everything on 127.0.0.1; a region per host (`bookcluster up
--region`, `compose/`) uses the hosts' own addresses or names. Two servers care:
etcd binds only IP addresses (a name in a listen URL is refused), and
PostgreSQL's `pg_hba.conf` must let in every host that connects (nodes of every
region, a standby on another host, a WAN proxy's outgoing side), each by
password (scram-sha-256) whatever its address.
"""

from __future__ import annotations

import ipaddress
import socket

from bookcluster.topology.model import Topology

LOOPBACK_HBA = ("127.0.0.1/32", "::1/128")


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def listen_host(host: str) -> str:
    """What a server that binds only IPs listens on for `host`: the IP itself, else
    every address (a name is resolved by its clients, not by the bind)."""
    return host if _ip(host) is not None else "0.0.0.0"


def _networks(host: str) -> list[str]:
    ip = _ip(host)
    if ip is not None:
        return [f"{ip}/{ip.max_prefixlen}"]
    try:  # a name: the addresses it has now (pg_hba would need reverse DNS for names)
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return [host]
    return sorted({f"{info[4][0]}/{32 if info[0] == socket.AF_INET else 128}"
                   for info in infos})


def client_networks(topology: Topology) -> list[str]:
    """Loopback and every host the topology names, as pg_hba addresses."""
    found = list(LOOPBACK_HBA)
    for region in topology.regions.values():
        for _, ep in region.endpoints():
            for net in _networks(ep.host):
                if net not in found:
                    found.append(net)
    return found
