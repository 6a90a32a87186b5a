"""A cluster of a test module's own, for tests that fail over, move or restart what the
session cluster's other tests rely on."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bookcluster.local.launcher import LocalCluster
from bookcluster.ops.demo_catalog import CatalogSpec
from bookcluster.topology.load import load_topology
from bookcluster.topology.placement import Placement
from tests.integration.conftest import Cluster
from tests.integration.support import Session, topology_yaml, use_topology


@asynccontextmanager
async def own_cluster(prefix: str, catalog: CatalogSpec, *, node_args: Sequence[str] = (),
                      wan_delay_ms: int | None = None,
                      **topology_options: Any) -> AsyncIterator[Cluster]:
    """Start a loopback cluster (`topology_yaml(**topology_options)`) in a temporary folder
    (cross-region links through the WAN proxy with `wan_delay_ms`); tokens and payments go
    to it while it runs, to the previous cluster afterwards."""
    previous = Session.topology
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        Path(tmp).chmod(0o755)  # PostgreSQL's unprivileged user must reach its data
        path = Path(tmp) / "topology.yaml"
        path.write_text(topology_yaml(Path(tmp) / "run", **topology_options))
        topology = load_topology(path)
        launcher = LocalCluster(topology, catalog=catalog, progress=lambda _: None,
                                node_args=node_args, wan_delay_ms=wan_delay_ms)
        await launcher.start()
        use_topology(topology)  # tokens and payments of this cluster
        try:
            yield Cluster(topology, launcher, Placement(topology), short_ttl_node="")
        finally:
            launcher.stop()
            if previous is not None:
                use_topology(previous)
