"""One process of the topology as a container service (`compose/`): no launcher.

A container runs one process, in the foreground, and its engine restarts it; so
instead of `bookcluster up` every compose service is one of

    bookcluster run NAME        exec the process NAME (`north.redis.master`,
                                `north.postgres.1`, `north.node.2`, ...) with the
                                configuration files the launcher would write
    bookcluster probe NAME      exit 0 if it is healthy (the launcher's probe); the
                                containers' own check is the cheaper
                                `python3 -m bookcluster.deploy.health_check` (see there)
    bookcluster setup --region R  once per region, when its etcd is up: etcd's login;
                                then, once its PostgreSQL has a leader: the database,
                                migrations and the catalog seed (`bookcluster.ops.region_setup`,
                                under the region's advisory lock, so a second run or a
                                second host at once does nothing twice)

The processes and their names are the launcher's; a replica of another region's
master counts as healthy once it answers (that master's host may be down).
"""

from __future__ import annotations

import asyncio
import functools
import os
import pwd
import tempfile
from collections.abc import Callable
from pathlib import Path

from bookcluster.deploy import health_check
from bookcluster.local import etcd, patroni, redis_server, sentinel
from bookcluster.local.binaries import Binaries, find_binaries
from bookcluster.local.launcher import gateway_spec, node_spec, worker_spec
from bookcluster.local.postgres_server import pg_os_user
from bookcluster.local.supervisor import ProcessSpec
from bookcluster.ops import region_setup
from bookcluster.ops.demo_catalog import CatalogSpec, build_catalog
from bookcluster.stores.probe import container_healthy, probe, wait_leader
from bookcluster.topology import environment
from bookcluster.topology.model import Region, Topology
from bookcluster.topology.secrets import secrets_dir

LEADER_TIMEOUT_S = 120.0


class UnknownProcess(RuntimeError):
    pass


def _builders(topology: Topology, binaries: Binaries, region: Region,
              pg_user: str | None) -> dict[str, Callable[[], ProcessSpec]]:
    """Every process of `region` by name, each built (its configuration files written, as
    the launcher does) only when asked; the payment gateway simulator with the topology's
    first region."""
    def _pg_side(build: Callable[[], ProcessSpec]) -> ProcessSpec:
        patroni.prepare(binaries, topology, region, pg_user)  # folders, member files
        return build()

    redis = binaries.redis_server
    out: dict[str, Callable[[], ProcessSpec]] = {
        f"{region.name}.redis.master": lambda: redis_server.master_spec(redis, topology, region),
        f"{region.name}.etcd": lambda: _pg_side(
            lambda: etcd.etcd_spec(str(binaries.etcd), topology, region, pg_user)),
    }
    for src in region.redis_replicas:
        out[f"{region.name}.redis.replica.{src}"] = functools.partial(
            redis_server.replica_spec, redis, topology, region, src)
    if region.redis_sentinel is not None:
        # A restarted sentinel keeps what it learned (the masters after a failover).
        out[f"{region.name}.redis.sentinel"] = functools.partial(
            sentinel.sentinel_spec, redis, topology, region, keep_config=True)
    for i in range(len(region.pg_members)):
        out[patroni.process_name(region, i)] = functools.partial(
            _pg_side, functools.partial(patroni.member_spec, binaries, topology, region, i,
                                        pg_user))
    for i in range(len(region.nodes)):
        out[f"{region.name}.node.{i + 1}"] = functools.partial(node_spec, topology, region, i, [])
    if region.worker is not None:
        out[f"{region.name}.worker"] = functools.partial(worker_spec, topology, region, [])
    if topology.payments is not None and next(iter(topology.regions)) == region.name:
        out["payments.gateway"] = functools.partial(gateway_spec, topology)
    return out


def find_spec(topology: Topology, name: str) -> ProcessSpec:
    region = topology.regions.get(name.split(".")[0]) or next(iter(topology.regions.values()))
    builders = _builders(topology, find_binaries(), region, pg_os_user())
    build = builders.get(name)
    if build is None:
        raise UnknownProcess(f"no process {name!r} in {topology.path} (known: "
                             f"{', '.join(builders)})")
    return build()


def run(topology: Topology, name: str) -> None:
    """Replace this process with NAME's, its output on ours (the container's log)."""
    topology.settings.run_dir.mkdir(parents=True, exist_ok=True)
    spec = find_spec(topology, name)
    health_check.record(topology.settings.run_dir, dict(spec.__dict__))
    if spec.umask is not None:
        os.umask(spec.umask)
    if spec.user is not None and os.geteuid() == 0:  # etcd as PostgreSQL's user
        entry = pwd.getpwnam(spec.user)
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    os.execvpe(spec.argv[0], list(spec.argv), {**environment.inherited(), **spec.env})


async def probe_command(topology: Topology, name: str) -> int:
    # Its address and kind only: built in a scratch folder, so that a health check never
    # rewrites the files of the process it checks.
    with tempfile.TemporaryDirectory(prefix="bookcluster-probe-") as scratch:
        (Path(scratch) / "secrets").symlink_to(secrets_dir(topology.settings.run_dir))
        spec = find_spec(topology.with_settings(run_dir=Path(scratch)), name)
    record = {**spec.__dict__, "log_path": str(spec.log_path)}
    result = await probe(record, topology.secrets)
    ok = container_healthy(record, result)
    print(("healthy" if ok else "unhealthy") + (f": {result['error']}" if "error" in result
                                                  else ""))
    return 0 if ok else 1


async def setup_command(topology: Topology, region_name: str, catalog: CatalogSpec) -> int:
    region = topology.region(region_name)
    if await etcd.ensure_auth(region, topology.secrets.get("etcd_password")):
        print(f"{region.name}: etcd now requires a login (user {etcd.USER})", flush=True)
    await wait_leader(region, LEADER_TIMEOUT_S, alive=lambda: True)
    async with region_setup.lock(topology, region):
        applied = await region_setup.create_and_migrate(topology, region)
        if applied:
            print(f"{region.name}: applied migrations {applied}", flush=True)
        await region_setup.seed_alone(topology, region.name,
                                      build_catalog(catalog, topology.settings.catalog_day_one()),
                                      lambda line: print(line, flush=True))
    return 0


def setup(topology: Topology, region: str, catalog: CatalogSpec) -> int:
    return asyncio.run(setup_command(topology, region, catalog))
