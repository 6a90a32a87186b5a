"""`bookcluster topology diff FILE` and `topology apply FILE [--dry-run]`.

An apply reaches every running node and worker without a restart:
1. FILE is validated: its epoch is the cluster's current one + 1 (the newest
   applied, read from every region's PostgreSQL); it changes only what a
   running process can take (routing: the theatre map, regions and their
   nodes; settings or a kept region's stores need a restart); and it places
   every theatre where the stores say it lives (`bookcluster/ops/ownership.py`: a
   theatre changes home only by `bookcluster topology move`).
2. The document is stored in every region's PostgreSQL (`cluster_topology`).
3. Every node and worker is told to adopt the epoch (`POST /ops/topology`),
   all at once; each answers with the epoch it now routes by.
4. If any process cannot take it (refused, down, no answer in time), it is
   named, the epoch is deleted from the stores, and the processes that took it
   go back to the previous one: the cluster stays at its current epoch.
On success FILE becomes the cluster's topology file (`--topology`), so a
restart starts from it. `bookcluster status` shows each process's epoch.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bookcluster.node.auth import OPERATOR, mint
from bookcluster.ops import ownership as cluster_ownership
from bookcluster.ops.runstate import read_state
from bookcluster.ops.topology_file import diff, load_next, parse_stored
from bookcluster.stores import ownership
from bookcluster.topology.model import Topology

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
        conn = await cluster_ownership.connect(topology, region)
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


async def catalog_theatres(topology: Topology) -> list[str]:
    region = next(iter(topology.regions))
    conn = await cluster_ownership.connect(topology, region)
    try:
        return [r["id"] for r in await conn.fetch("SELECT id FROM theatre ORDER BY id")]
    finally:
        await conn.close()


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
            conn = await cluster_ownership.connect(topology, region)
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


async def apply_document(old: Topology, new: Topology, document: str,
                         progress: Any = print) -> list[Reached]:
    """Store `new` (its `document`) everywhere and have every process take it; on any
    failure put everything back at `old` and raise ApplyFailed naming the processes."""
    await store(new, new.epoch, document)
    targets = processes(old, new)
    token = operator_token(new)
    reached = await push(targets, new.epoch, token)
    failed = [r for r in reached if r.epoch != new.epoch]
    if not failed:
        return reached
    progress(f"{len(failed)} process(es) could not take epoch {new.epoch}; rolling back to "
             f"{old.epoch}")
    await store(new, new.epoch, None)
    took = {r.name: r.address for r in reached if r.epoch == new.epoch}
    back = await push(took, old.epoch, token)
    stuck = [r for r in back if r.epoch != old.epoch]
    lines = [f"  {r.name} ({r.address}): {r.error or f'at epoch {r.epoch}'}" for r in failed]
    lines += [f"  {r.name} ({r.address}) is still at {new.epoch} (it did not go back: "
              f"{r.error}); it goes back when it restarts" for r in stuck]
    raise ApplyFailed(f"epoch {new.epoch} was not applied; the cluster stays at "
                      f"{old.epoch}:\n" + "\n".join(lines))


def validate(old: Topology, new: Topology, theatres: list[str], file: Path) -> None:
    """Refuse what a running cluster cannot take: a wrong epoch, a change only a
    restart takes, a theatre placed away from its owner."""
    if new.epoch != old.epoch + 1:
        raise ApplyFailed(f"{file}: epoch {new.epoch}, but the cluster is at epoch "
                          f"{old.epoch}: a new topology has epoch {old.epoch + 1}")
    changes = diff(old, new, theatres)
    if changes.restart:
        raise ApplyFailed(f"{file}: these changes need a restart, not an apply:\n  "
                          + "\n  ".join(changes.restart))


async def apply_command(topology: Topology, file: Path, dry_run: bool = False,
                        as_json: bool = False) -> int:
    old, _ = await current(topology)
    new = load_next(file, old)
    theatres = await catalog_theatres(old)
    validate(old, new, theatres, file)
    cluster_ownership.check(new, await cluster_ownership.recorded_owners(new), str(file))
    targets = processes(old, new)
    if dry_run:
        report = {"dry_run": True, "epoch": new.epoch, "processes": targets,
                  "diff": diff(old, new, theatres).as_dict()}
        print(json.dumps(report, indent=2) if as_json else
              "\n".join([*diff(old, new, theatres).lines(),
                         f"would apply epoch {new.epoch} to {len(targets)} processes: "
                         + ", ".join(sorted(targets))]))
        return 0
    document = _read(file)
    try:
        reached = await apply_document(old, new, document,
                                       lambda line: print(line, file=sys.stderr))
    except ApplyFailed as exc:
        if as_json:
            print(json.dumps({"applied": False, "error": str(exc)}, indent=2))
        raise
    _adopt_file(file, topology.path, document)
    if as_json:
        print(json.dumps({"applied": True, "epoch": new.epoch,
                          "processes": [asdict(r) for r in reached]}, indent=2))
    else:
        print(f"epoch {new.epoch} applied; every process routes by it:")
        for r in sorted(reached, key=lambda r: r.name):
            print(f"  {r.name:<24} {r.address:<28} epoch {r.epoch}")
    return 0


def _read(file: Path) -> str:
    return file.read_text()


def _adopt_file(file: Path, cluster_file: Path, document: str) -> None:
    """FILE becomes the cluster's topology file: a restart starts from what runs."""
    if file.resolve() != cluster_file.resolve():
        cluster_file.write_text(document)


async def diff_command(topology: Topology, file: Path, as_json: bool = False) -> int:
    old, _ = await current(topology)
    new = load_next(file, old)
    changes = diff(old, new, await catalog_theatres(old))
    print(json.dumps(changes.as_dict(), indent=2) if as_json else "\n".join(changes.lines()))
    return 0
