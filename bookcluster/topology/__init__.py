"""The operator's map: `topology.yaml` loaded into a frozen model, placement of theatres
on regions, and secrets (the only reader of environment variables and secret files).

The names below are imported when first asked for: a container's health check needs
`secrets` only, and must not pay for YAML and the hash ring."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bookcluster.topology.errors import (
        RegionUnavailable,
        RouterError,
        RoutingError,
        TopologyError,
    )
    from bookcluster.topology.load import load_topology, parse_topology
    from bookcluster.topology.model import Endpoint, Region, Settings, Topology, parse_duration
    from bookcluster.topology.placement import Placement

_HOMES = {
    "RegionUnavailable": "errors", "RouterError": "errors", "RoutingError": "errors",
    "TopologyError": "errors", "Endpoint": "model", "Region": "model", "Settings": "model",
    "Topology": "model", "load_topology": "load", "parse_topology": "load",
    "parse_duration": "model",
    "Placement": "placement",
}

__all__ = [
    "Endpoint", "Placement", "Region", "RegionUnavailable", "RouterError", "RoutingError",
    "Settings", "Topology", "TopologyError", "load_topology", "parse_duration", "parse_topology",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
