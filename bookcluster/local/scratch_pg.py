"""A scratch PostgreSQL: one plain primary started with the launcher's own pieces (no
Patroni, no Redis, no nodes), its database created, stopped when the block ends. For
the store-only cost tools (loadtests/pg_*_cost.py) and the migration tests."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bookcluster.db.create import create_database
from bookcluster.local import postgres_server
from bookcluster.local.binaries import find_binaries
from bookcluster.local.ports import free_ports
from bookcluster.local.supervisor import Supervisor
from bookcluster.stores.probe import wait_healthy
from bookcluster.topology.load import load_topology
from bookcluster.topology.model import Region, Topology
from bookcluster.topology.secrets import generate_local


@asynccontextmanager
async def scratch_primary(prefix: str) -> AsyncIterator[tuple[Topology, Region]]:
    """A running primary with the application's (empty) database: its one-region
    topology (secrets in its run folder) and region."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)  # noqa: ASYNC240 - PostgreSQL's unprivileged user must reach it
        generate_local(folder / "run")
        redis, replica, pg, node = free_ports(4)
        (folder / "topology.yaml").write_text(
            f"settings:\n  run_dir: {folder / 'run'}\n  durable: false\n"
            f"regions:\n  scratch:\n    redis:\n      master: 127.0.0.1:{redis}\n"
            f"      replicas:\n        scratch: 127.0.0.1:{replica}\n"
            f"    postgres:\n      primary: 127.0.0.1:{pg}\n"
            f"    nodes: [127.0.0.1:{node}]\n")
        topology = load_topology(folder / "topology.yaml")
        region = topology.region("scratch")
        binaries = find_binaries()
        user = postgres_server.pg_os_user()
        await postgres_server.init_primary(
            binaries, postgres_server.data_dir(topology, region, "pg-primary"), user,
            topology.secrets)
        (folder / "aux").mkdir()
        supervisor = Supervisor(folder / "aux")
        spec = postgres_server.primary_spec(binaries, topology, region, user)
        try:
            child = supervisor.start(spec)
            await wait_healthy({**spec.__dict__, "log_path": str(spec.log_path),
                                "address": spec.address.rsplit("/", 1)[0] + "/postgres"},
                               60, alive=lambda: child.popen.poll() is None,
                               secrets=topology.secrets)
            await create_database([region.pg_primary], topology.secrets)
            yield topology, region
        finally:
            supervisor.stop()
