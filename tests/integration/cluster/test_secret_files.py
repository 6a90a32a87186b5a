"""No file holding a secret is readable by another OS user, also after Sentinel and
the Redis servers rewrote their configuration files (as a failover makes them)."""

from __future__ import annotations

import pwd
import stat
from pathlib import Path

from bookcluster.stores.connections import make_redis
from bookcluster.topology.secrets import PURPOSES
from tests.integration.conftest import Cluster

# What PostgreSQL's OS user may hold: the launcher gives Patroni (run as that user)
# the database roles' passwords, its own REST API's and its etcd's.
PG_SIDE = {"pg_password", "pg_admin_password", "patroni_password", "etcd_password"}
MAX_SCANNED = 4 << 20  # bytes: data files (WAL, AOF) are not where configs live


def secrets_in(path: Path, values: dict[str, bytes]) -> set[str]:
    try:
        if path.stat().st_size > MAX_SCANNED:
            return set()
        data = path.read_bytes()
    except OSError:
        return set()
    return {name for name, value in values.items() if value in data}


async def test_no_secret_is_readable_by_another_user(cluster: Cluster) -> None:
    topology = cluster.topology
    for region in topology.regions.values():
        servers = [region.redis_master, *region.redis_replicas.values()]
        for ep in servers + ([region.redis_sentinel] if region.redis_sentinel else []):
            client = make_redis(ep, topology.secrets)
            try:
                if ep == region.redis_sentinel:
                    await client.execute_command("SENTINEL FLUSHCONFIG")  # a rewrite
                else:
                    await client.execute_command("CONFIG REWRITE")  # as Sentinel's failover
            finally:
                await client.aclose()
    values = {name: topology.secrets.get(name).encode() for name in PURPOSES}
    exposed = []
    for path in topology.settings.run_dir.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        found = secrets_in(path, values)
        if not found:
            continue
        info = path.stat()
        owner = pwd.getpwuid(info.st_uid).pw_name
        if info.st_mode & 0o077:
            exposed.append(f"{path} ({stat.filemode(info.st_mode)} {owner}): {sorted(found)}")
        elif owner != "root" and found - PG_SIDE:
            exposed.append(f"{path} (owned by {owner}): {sorted(found - PG_SIDE)}")
    assert not exposed, "\n".join(exposed)
