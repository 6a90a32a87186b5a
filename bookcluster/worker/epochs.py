"""The cluster's applied topology epochs: read and stored in every region's PostgreSQL,
and pushed to every node and worker (`POST /ops/topology`).

`bookcluster topology apply` (`bookcluster/ops/apply.py`) and a theatre move use them;
so does the source region's worker when it finishes a move its mover left.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import asyncpg

from bookcluster.node.auth import OPERATOR, mint
from bookcluster.stores import ownership
from bookcluster.stores.sessions import connect
from bookcluster.topology.document import parse_stored
from bookcluster.topology.model import Topology
from bookcluster.topology.runstate import read_state

PUSH_TIMEOUT_S = 3.0
OPERATOR_SUB = "bookcluster-topology"  # the operator token's `sub`


class ApplyFailed(RuntimeError):
    """The new epoch was refused before or while it was applied; the cluster stays put."""


@dataclass(frozen=True)
class Reached:
    name: str
    address: str
    epoch: int | None  # the epoch it routes by now (None: it did not answer)
    error: str | None = None


async def applied(topology: Topology) -> tuple[int, str]:
    """The cluster's newest applied topology (epoch, document), over every region."""
    best: tuple[int, str] | None = None
    for region in topology.regions:
        conn = await connect(topology, region)
        try:
            exists = await conn.fetchval("SELECT to_regclass('cluster_topology') IS NOT NULL")
            stored = await ownership.latest_topology(conn) if exists else None
        finally:
            await conn.close()
        if stored is not None and (best is None or stored[0] > best[0]):
            best = stored
    return best or (topology.epoch, topology.path.read_text())


async def current(topology: Topology) -> tuple[Topology, str]:
    """The topology the cluster runs (as applied), parsed like our file."""
    epoch, document = await applied(topology)
    if epoch == topology.epoch:
        return topology, document
    return parse_stored(document, topology), document


def processes(old: Topology, new: Topology) -> dict[str, str]:
    """Every node and worker that must take `new` (name -> base URL): those both files
    name in regions that stay, and any other the local launcher started (extra nodes)."""
    found: dict[str, str] = {}
    for topology in (old, new):
        for region in topology.regions.values():
            if region.name not in new.regions:
                continue  # a dropped region's processes are stopped, not told
            for i, ep in enumerate(region.nodes):
                found.setdefault(f"http://{ep}", f"{region.name}.node.{i + 1}")
            if region.worker is not None:
                found.setdefault(f"http://{region.worker}", f"{region.name}.worker")
    state = read_state(new.settings.run_dir)
    for proc in (state or {}).get("processes", []):
        if proc["role"] in ("node", "worker") and proc["region"] in new.regions:
            found.setdefault(proc["address"], proc["name"])
    return {name: address for address, name in found.items()}


def operator_token(topology: Topology) -> str:
    """An operator token for the processes (minted with the cluster's key, or given)."""
    given = topology.secrets.given("operator_token")
    if given:
        return given
    try:
        return mint(topology, OPERATOR_SUB, 300, (OPERATOR,))
    except ValueError as exc:  # RS256/ES256: tokens come from the identity provider
        raise ApplyFailed(f"cannot make an operator token ({exc}); set "
                          "BOOKCLUSTER_OPERATOR_TOKEN") from None


async def store(topology: Topology, epoch: int, document: str | None,
                sessions: dict[str, asyncpg.Connection] | None = None) -> None:
    """Put the document of `epoch` in every region's store (None: delete it), on the
    given sessions where there are (a move has them open) or new ones."""
    async def one(region: str) -> None:
        conn = (sessions or {}).get(region)
        own = conn is None
        if conn is None:
            conn = await connect(topology, region)
        try:
            if document is None:
                await conn.execute("DELETE FROM cluster_topology WHERE epoch = $1", epoch)
            else:
                await ownership.store_topology(conn, epoch, document)
        finally:
            if own:
                await conn.close()

    await asyncio.gather(*(one(region) for region in topology.regions))


async def push(targets: dict[str, str], epoch: int, token: str) -> list[Reached]:
    """Tell every process to route by `epoch`, all at once."""
    timeout = aiohttp.ClientTimeout(total=PUSH_TIMEOUT_S)
    headers = {"Authorization": f"Bearer {token}"}

    async def one(http: aiohttp.ClientSession, name: str, address: str) -> Reached:
        try:
            async with http.post(f"{address}/ops/topology", json={"epoch": epoch},
                                 headers=headers) as resp:
                body = await resp.json(content_type=None)
            if resp.status == 200:
                return Reached(name, address, int(body["epoch"]))
            return Reached(name, address, None, f"{resp.status} {body.get('error')}: "
                                                f"{body.get('message')}")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return Reached(name, address, None, f"{type(exc).__name__}: {exc}".strip())

    async with aiohttp.ClientSession(timeout=timeout) as http:
        return list(await asyncio.gather(*(one(http, n, a) for n, a in targets.items())))
