"""The launcher's state file: which processes a local cluster runs, for commands
that act on a running cluster (`down`, `topology apply`) without owning it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STATE_FILE = "cluster.json"


def read_state(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / STATE_FILE).read_text())  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None


# The cluster's applied topology as the commands on this machine last saw it (an
# apply, a move, a pull, a start that found the file older): `up` tells a stale file
# before it starts anything, and `topology pull` works while the cluster is down. The
# stores stay the truth (`cluster_topology` in every region's PostgreSQL).
APPLIED_FILE = "applied-topology.yaml"


def applied_copy(run_dir: Path) -> Path:
    return run_dir / APPLIED_FILE


def remember_applied(run_dir: Path, document: str) -> None:
    if not run_dir.is_dir():
        return  # no cluster ran from here: nothing to remember it for
    path = applied_copy(run_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(document)
    tmp.replace(path)


def remembered_applied(run_dir: Path) -> str | None:
    try:
        return applied_copy(run_dir).read_text()
    except FileNotFoundError:
        return None
