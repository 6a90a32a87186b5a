"""WAN links for a one-machine cluster: a TCP proxy that delays, blackholes or resets.

Every region runs on one host here, so a cross-region hop (a node writing to another
region's master, a replica following its master) would cost nothing. This kernel has no
netem and there is no toxiproxy, so each cross-region link goes through this proxy: it
holds every chunk for the link's one-way delay in each direction (a round trip pays twice
the delay), and fault tests can cut a link at runtime: "blackhole" keeps connections open
but forwards nothing, "reset" kills them with an RST and resets new ones at once.

Run as a process: `python -m bookcluster.devsim.wanproxy --config links.json --control-port N`,
with `links.json` = `{"links": [{"name", "listen_host", "listen_port", "target_host",
"target_port", "delay_ms", "mode"}, ...]}`. The control API listens on loopback:
`GET /healthz`, `GET /links`, `POST /links` (every link) and `POST /links/{name}`, each
POST with a JSON body `{"delay_ms"?: int, "mode"?: str}`.
"""

from bookcluster.devsim.wanproxy.control import control_app
from bookcluster.devsim.wanproxy.links import (
           MODES,
           ConfigError,
           InvalidInput,
           Link,
           Mode,
           UnknownLink,
           WanProxyError,
)
from bookcluster.devsim.wanproxy.proxy import LinkProxy, ProxySet

__all__ = ["MODES", "ConfigError", "InvalidInput", "Link", "LinkProxy", "Mode", "ProxySet",
           "UnknownLink", "WanProxyError", "control_app"]
