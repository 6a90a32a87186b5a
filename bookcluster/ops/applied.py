"""The cluster's applied topology as a file: `bookcluster topology pull`, and the
check `up` makes that the operator's file is not older than what the cluster runs.

The applied topology lives in the cluster (`cluster_topology` in every region's
PostgreSQL); the run folder keeps a copy of the newest one the commands here saw
(`bookcluster/topology/runstate.py`), so a stale file is told before anything starts
and `pull` works while the cluster is down.
"""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

from bookcluster.topology.document import parse_stored
from bookcluster.topology.errors import TopologyError
from bookcluster.topology.model import Topology
from bookcluster.topology.runstate import applied_copy, remember_applied, remembered_applied
from bookcluster.worker.epochs import applied


class StaleTopology(RuntimeError):
    """The operator's file is older than the cluster's applied topology."""

    def __init__(self, topology: Topology, epoch: int) -> None:
        self.file_epoch, self.applied_epoch = topology.epoch, epoch
        file = topology.path
        super().__init__(
            f"{file} is at epoch {topology.epoch}, but the cluster in "
            f"{topology.settings.run_dir} runs epoch {epoch} (applied or moved since the "
            "file was written); nothing was started. Two ways out:\n"
            f"  1. bookcluster topology pull              write epoch {epoch} to {file}, "
            "then start again\n"
            f"  2. bookcluster up --stored-topology       start with the stored epoch {epoch} "
            f"and leave {file} as it is")


def remembered(topology: Topology) -> Topology | None:
    """The run folder's copy of the applied topology, if one was kept and still reads."""
    document = remembered_applied(topology.settings.run_dir)
    if document is None:
        return None
    try:
        return parse_stored(document, topology)
    except TopologyError:
        return None  # a copy that no longer reads tells nothing: the stores decide


def check_not_older(topology: Topology) -> None:
    """Before starting: refuse a file older than the applied copy the run folder keeps."""
    copy = remembered(topology)
    if copy is not None and copy.epoch > topology.epoch:
        raise StaleTopology(topology, copy.epoch)


def stored_for_start(topology: Topology) -> Topology:
    """`up --stored-topology`: the applied topology (the run folder's copy, the file the
    processes then read) where it is newer than the operator's file, else the file."""
    copy = remembered(topology)
    if copy is None or copy.epoch <= topology.epoch:
        return topology
    from bookcluster.topology.load import load_topology

    return load_topology(applied_copy(topology.settings.run_dir), topology.settings.run_dir)


def check_stored(topology: Topology, stored_epoch: int, document: str) -> None:
    """After the stores answered: remember what they hold, and refuse an older file."""
    if stored_epoch > topology.epoch:
        remember_applied(topology.settings.run_dir, document)
        raise StaleTopology(topology, stored_epoch)


async def pull_command(topology: Topology, file: Path | None, as_json: bool = False) -> int:
    """Write the cluster's applied topology to `file` (default: the cluster's file)."""
    target = file or topology.path
    try:
        epoch, document = await applied(topology)
        source = "the cluster's stores"
        remember_applied(topology.settings.run_dir, document)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        copy = remembered(topology)
        if copy is None:
            raise RuntimeError(f"cannot read the applied topology ({type(exc).__name__}: "
                               f"{exc}) and {topology.settings.run_dir} keeps no copy of it: "
                               "start the cluster's PostgreSQL (`bookcluster up`)") from None
        epoch, source = copy.epoch, f"{applied_copy(topology.settings.run_dir)} (cluster down)"
        document = applied_copy(topology.settings.run_dir).read_text()
    before = target.read_text() if target.exists() else None
    changed = before != document
    if changed:
        target.write_text(document)
    if as_json:
        print(json.dumps({"file": str(target), "epoch": epoch, "changed": changed,
                          "source": source}, indent=2))
    elif changed:
        print(f"{target}: epoch {epoch} written, from {source}")
    else:
        print(f"{target}: already epoch {epoch}; no change")
    return 0
