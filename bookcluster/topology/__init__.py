"""The operator's map: `topology.yaml` loaded into a frozen model, placement of theatres
on regions, and secrets (the only reader of environment variables and secret files)."""

from bookcluster.topology.errors import RegionUnavailable, RouterError, RoutingError, TopologyError
from bookcluster.topology.load import load_topology, parse_topology
from bookcluster.topology.model import Endpoint, Region, Settings, Topology, parse_duration
from bookcluster.topology.placement import Placement

__all__ = [
    "Endpoint", "Placement", "Region", "RegionUnavailable", "RouterError", "RoutingError",
    "Settings", "Topology", "TopologyError", "load_topology", "parse_duration",
    "parse_topology",
]
