"""A region's etcd: Patroni's DCS (where the leader key lives), one member on the
region's host.

Whoever can write the leader key decides which PostgreSQL is the primary, so
etcd requires a login like every other store of ours: the `root` user, with the
`etcd_password` secret, set up once when the launcher first starts it (etcd's
JSON gateway, `/v3/auth/...`) and then enabled. Patroni logs in with the same.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from bookcluster.local.supervisor import ProcessSpec
from bookcluster.topology.addresses import listen_host
from bookcluster.topology.model import Region, Topology

USER = "root"  # etcd's superuser; Patroni needs read-write on its whole namespace anyway
TIMEOUT_S = 5.0
# A bounded data folder: Patroni writes its keys every second, so etcd's defaults (a
# snapshot every 100,000 writes, five 64 MB WAL files kept, no compaction, no quota)
# let it grow for days. Old revisions are compacted (Patroni reads only the newest),
# snapshots come every 10,000 writes and two WAL files (and snapshots) are kept.
BOUNDS = ("--snapshot-count", "10000", "--max-wals", "2", "--max-snapshots", "2",
          "--auto-compaction-mode", "revision", "--auto-compaction-retention", "1000",
          "--quota-backend-bytes", str(256 << 20))


class EtcdError(RuntimeError):
    pass


def etcd_spec(binary: str, topology: Topology, region: Region,
              user: str | None) -> ProcessSpec:
    """One member, its data next to the region's PostgreSQL."""
    name = f"{region.name}.etcd"
    client, peer = region.pg_etcd
    folder = topology.settings.run_dir / region.name / "etcd"
    return ProcessSpec(
        name=name, region=region.name, role="etcd", host=client.host, port=client.port,
        argv=(binary, "--name", region.name, "--data-dir", str(folder),
              "--listen-client-urls", f"http://{listen_host(client.host)}:{client.port}",
              "--advertise-client-urls", f"http://{client}",
              "--listen-peer-urls", f"http://{listen_host(peer.host)}:{peer.port}",
              "--initial-advertise-peer-urls", f"http://{peer}",
              "--initial-cluster", f"{region.name}=http://{peer}",
              "--log-level", "warn", "--logger", "zap", *BOUNDS),
        log_path=topology.settings.run_dir / "logs" / f"{name}.log",
        address=f"http://{client}", user=user)


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any],
                token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": token} if token else {}
    async with session.post(url, json=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def ensure_auth(region: Region, password: str) -> bool:
    """Require a login on the region's etcd (root / `password`). Returns True if it set
    that up now, False if it was already so. Idempotent; raises EtcdError."""
    base = f"http://{region.pg_etcd[0]}/v3/auth"
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async def enabled() -> bool:
            status, body = await _post(session, f"{base}/authenticate",
                                       {"name": USER, "password": password})
            return status == 200 and bool(body.get("token"))

        if await enabled():
            return False  # enabled on an earlier start
        steps = [("role/add", {"name": USER}),
                 ("user/add", {"name": USER, "password": password}),
                 ("user/grant", {"user": USER, "role": USER}),
                 ("enable", {})]
        for path, request in steps:
            status, body = await _post(session, f"{base}/{path}", request)
            # A step done by a start that died half-way is done: go on.
            if status != 200 and "already exists" not in str(body.get("error", "")):
                if await enabled():  # another set-up of this region (a host) finished first
                    return False
                raise EtcdError(f"{region.name}: etcd {path}: HTTP {status} {body}")
    return True

