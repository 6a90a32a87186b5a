"""Which region is home to a theatre: the explicit map first, then a hash ring.

The ring only places theatres the operator has not mapped. It is a
`uhashring` ring over region names, so adding a region moves only the
theatres that land on the new region; unrelated placements stay put.
"""

from __future__ import annotations

from uhashring import HashRing

from bookcluster.topology.model import Topology


class Placement:
    def __init__(self, topology: Topology) -> None:
        self._explicit = dict(topology.theatres)
        self._ring = HashRing(nodes=sorted(topology.regions))

    def region_of(self, theatre_id: str) -> str:
        region = self._explicit.get(theatre_id)
        if region is not None:
            return region
        return str(self._ring.get_node(theatre_id))

    def is_explicit(self, theatre_id: str) -> bool:
        return theatre_id in self._explicit
