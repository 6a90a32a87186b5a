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

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bookcluster.ops import ownership as cluster_ownership
from bookcluster.ops.topology_file import diff, load_next
from bookcluster.topology.model import Topology
from bookcluster.topology.runstate import remember_applied
from bookcluster.worker.epochs import (
    ApplyFailed,
    Reached,
    applied,
    current,
    operator_token,
    processes,
    push,
    store,
)

# Raised and returned by the commands here; defined with the epochs' store and push.
__all__ = ["ApplyFailed", "Reached", "applied", "apply_command", "current", "diff_command"]


async def catalog_theatres(topology: Topology) -> list[str]:
    region = next(iter(topology.regions))
    conn = await cluster_ownership.connect(topology, region)
    try:
        return [r["id"] for r in await conn.fetch("SELECT id FROM theatre ORDER BY id")]
    finally:
        await conn.close()


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
    remember_applied(topology.settings.run_dir, document)
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
