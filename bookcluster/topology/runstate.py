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
