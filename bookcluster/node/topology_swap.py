"""Taking another topology epoch while running, without a restart.

Every applied topology is stored in each region's PostgreSQL (`cluster_topology`,
written by `bookcluster topology apply` and `topology move` before they tell
the processes). A process adopts an epoch from its own region's store, so a
node started with an older file, or one that missed an apply, corrects itself
from local data when a write answers MOVED (`access.py`), and the operator
pushes an epoch with `POST /ops/topology`.

What changes live is routing: the epoch, the theatre map, regions added or
dropped and their nodes. Stores of a region that stays keep their addresses
(a new address needs a restart), and settings, auth, limits and payments stay
as the process started. The swap is one step on the event loop: the catalog's
homes, the connections and every hook see the new epoch together.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace

from bookcluster.catalog import Catalog
from bookcluster.errors import NodeError
from bookcluster.loops import Loop
from bookcluster.stores import ownership
from bookcluster.stores.connections import Connections
from bookcluster.topology.errors import RouterError
from bookcluster.topology.load import parse_topology
from bookcluster.topology.model import Endpoint, Topology
from bookcluster.topology.placement import Placement

log = logging.getLogger(__name__)

# A hook gets the new topology and the shows whose home changed (show -> old home).
Hook = Callable[[Topology, dict[int, str]], None]
# A process that missed an apply (down, partitioned) finds the epoch in its store this often.
POLL_INTERVAL_S = 5.0  # nodes: `--topology-poll`


class MapDisagrees(RouterError):
    """At start-up: the topology places theatres where this region's records disagree."""

    def __init__(self, region: str, epoch: int, found: list[str]) -> None:
        super().__init__(
            f"the topology (epoch {epoch}) disagrees with the ownership {region}'s PostgreSQL "
            "records:\n  " + "\n  ".join(found) + "\nfix `theatres:` in topology.yaml to "
            "match, or move theatres with `bookcluster topology move THEATRE --to REGION`")


class TopologyRefused(NodeError):
    """This process cannot take the epoch asked for; nothing changed."""

    status = 409
    code = "topology_refused"


class TopologySwap:
    def __init__(self, connections: Connections, catalog: Catalog) -> None:
        self._connections = connections
        self._catalog = catalog
        self._lock = asyncio.Lock()
        self.hooks: list[Hook] = []

    @property
    def topology(self) -> Topology:
        return self._connections.topology

    async def adopt(self, epoch: int | None = None) -> Topology:
        """Adopt `epoch` from this region's store (also an older one: an apply rolled
        back), or with None the newest stored one if it is newer than ours."""
        async with self._lock:
            async with self._connections.pg_catalog().acquire() as conn:
                stored = await ownership.latest_topology(conn, epoch)
            current = self.topology
            if stored is None:
                if epoch is None:
                    return current
                raise TopologyRefused(f"epoch {epoch} was never applied to this region",
                                      epoch=epoch)
            if stored[0] == current.epoch or (epoch is None and stored[0] < current.epoch):
                return current
            new = self._checked(current, stored[1])
            await self._connections.adopt(new)  # from here on nothing awaits
            moved = self._catalog.rehome(Placement(new))
            for hook in self.hooks:
                hook(new, moved)
            log.info("topology epoch %d -> %d: %d show(s) changed home, regions %s",
                     current.epoch, new.epoch, len(moved), ", ".join(new.regions))
            return new

    def _checked(self, current: Topology, document: str) -> Topology:
        try:
            parsed = parse_topology(document, current.path, current.settings.run_dir)
        except RouterError as exc:
            raise TopologyRefused(f"the stored topology is invalid: {exc}") from None
        local = self._connections.local_region
        if local not in parsed.regions:
            raise TopologyRefused(f"epoch {parsed.epoch} has no region {local!r}, this "
                                  "process's own: stop it instead", epoch=parsed.epoch)
        for name, region in current.regions.items():
            # A region may gain stores (a replica of an added region), never move one.
            if name in parsed.regions and not _stores(region.endpoints()) \
                    <= _stores(parsed.regions[name].endpoints()):
                raise TopologyRefused(f"epoch {parsed.epoch} changes the stores of region "
                                      f"{name}: that needs a restart", epoch=parsed.epoch)
        # Only routing changes live; this process's own settings (and overrides) stay.
        return replace(current, epoch=parsed.epoch, regions=parsed.regions,
                       theatres=parsed.theatres)

    async def _poll(self) -> None:
        await self.adopt()

    def loop(self, interval_s: float = POLL_INTERVAL_S) -> Loop:
        """Look for a newer epoch in this region's store now and then (a process that
        missed an apply catches up within `interval_s`, reads included). Start-up
        adopted already: the first look is one interval later. A failed look is tried
        again (backed off); routing goes on meanwhile."""
        return Loop("topology", self._poll, interval_s, wait_first=True)

    async def start(self) -> None:
        """At start-up: adopt a newer epoch the cluster applied than our file's, then
        refuse to serve with a map this region's records contradict."""
        await self.adopt()
        async with self._connections.pg_catalog().acquire() as conn:
            records = await ownership.owners(conn)
        found = self.conflicts(records)
        if found:
            raise MapDisagrees(self._connections.local_region, self.topology.epoch, found)

    def conflicts(self, records: dict[str, ownership.Owner]) -> list[str]:
        """Theatres this region's records and our map disagree about, in words."""
        placement, topology = self._catalog.placement, self.topology
        local = self._connections.local_region
        found = []
        for theatre in sorted(set(self._catalog.theatres) | set(records)):
            record, placed = records.get(theatre), placement.region_of(theatre)
            here = record is not None and record.state in (ownership.OWNED, ownership.FROZEN)
            if placed == local and not here:
                what = "no record" if record is None else \
                    f"{record.state} to {record.owner} at epoch {record.epoch}"
                found.append(f"{theatre}: placed in {local}, which does not own it ({what})")
            elif here and placed != local and record is not None \
                    and record.epoch <= topology.epoch and record.state == ownership.OWNED:
                found.append(f"{theatre}: placed in {placed}, but {local} owns it "
                             f"(since epoch {record.epoch})")
        return found


def _stores(endpoints: list[tuple[str, Endpoint]]) -> set[tuple[str, Endpoint]]:
    """A region's store addresses (its nodes and worker may change live)."""
    return {(label, ep) for label, ep in endpoints
            if not label.startswith("nodes") and label != "worker"}
