"""Topology, placement of theatres on regions, and per-region connections."""

from router.errors import RegionUnavailable, RouterError, RoutingError, TopologyError
from router.placement import Placement
from router.topology import Endpoint, Region, Settings, Topology, load_topology, parse_duration

__all__ = [
    "Endpoint", "Placement", "Region", "RegionUnavailable", "RouterError", "RoutingError",
    "Settings", "Topology", "TopologyError", "load_topology", "parse_duration",
]
