"""A scratch PostgreSQL for the store-only cost tools (pg_hold_cost.py, pg_join_cost.py):
one plain primary started with the launcher's own pieces, its database created and
migrated, stopped when the block ends."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from bookcluster.db.create import create_database
from bookcluster.db.migrate import migrate
from bookcluster.local import postgres_server
from bookcluster.local.binaries import find_binaries
from bookcluster.local.ports import free_ports
from bookcluster.local.supervisor import Supervisor
from bookcluster.stores.connections import PG_TOOL_SESSION, pg_dsn, pg_login
from bookcluster.stores.probe import wait_healthy
from bookcluster.topology.load import load_topology
from bookcluster.topology.model import Region, Topology
from bookcluster.topology.secrets import generate_local

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """A process's CPU so far (utime + stime from /proc), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


@asynccontextmanager
async def scratch_postgres(prefix: str) -> AsyncIterator[tuple[Topology, Region]]:
    """A migrated scratch primary: its one-region topology and region."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)  # noqa: ASYNC240 - once, before anything runs
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
            tool = await asyncpg.connect(pg_dsn(region.pg_primary),
                                         **pg_login(topology.secrets),
                                         server_settings=PG_TOOL_SESSION)
            try:
                await migrate(tool)
            finally:
                await tool.close()
            yield topology, region
        finally:
            supervisor.stop()
