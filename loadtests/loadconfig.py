"""The load test's settings: its locust options and the topology, read once per process.

Workers get the master's options with the first spawn message and read the
topology file (and the cluster's token key from its run folder) themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from picking import parse_mix, share

from bookcluster.node.auth import mint
from bookcluster.topology.load import load_topology
from bookcluster.topology.model import Topology


@dataclass(frozen=True)
class LoadConfig:
    topology: Topology
    nodes: Mapping[str, tuple[str, ...]]  # region -> node base URLs
    user_mix: Mapping[str, float]
    target_mix: Mapping[str, float]
    hot_shows: int
    hot_share: float
    abandon_share: float
    cancel_share: float
    anxious_share: float


@functools.cache
def _load_config(topology: str, user_mix: str, target_mix: str, hot_shows: str,
                 hot_share: str, abandon_share: str, cancel_share: str,
                 anxious_share: str) -> LoadConfig:
    topo = load_topology(topology)
    if topo.payments is None:
        raise ValueError(f"{topology} has no payments section: nobody could pay")
    mint(topo, "load-check", 60)  # the signing key is there (else SecretMissing says where)
    regions = list(topo.regions)
    hot = int(hot_shows)
    if hot < 0:
        raise ValueError(f"--hot-shows: expected a count >= 0, got {hot_shows}")
    return LoadConfig(
        topology=topo,
        nodes={name: tuple(f"http://{ep.host}:{ep.port}" for ep in region.nodes)
               for name, region in topo.regions.items()},
        user_mix=parse_mix(user_mix, regions, "--user-region-mix"),
        target_mix=parse_mix(target_mix, regions, "--target-region-mix"),
        hot_shows=hot,
        hot_share=share(hot_share, "--hot-share"),
        abandon_share=share(abandon_share, "--abandon-share"),
        cancel_share=share(cancel_share, "--cancel-share"),
        anxious_share=share(anxious_share, "--anxious-share"),
    )


def load_config(options: Any) -> LoadConfig:
    """The run's settings, read once per process (workers get the master's options)."""
    return _load_config(str(options.topology), str(options.user_region_mix),
                        str(options.target_region_mix), str(options.hot_shows),
                        str(options.hot_share), str(options.abandon_share),
                        str(options.cancel_share), str(options.anxious_share))
