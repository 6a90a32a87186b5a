"""A container's health check: cheap, blocking, through the one prober.

    python3 -m bookcluster.deploy.health_check RUN_DIR NAME      exit 0 if process NAME is healthy

An engine runs every container's check every few seconds; `bookcluster probe`
imports the whole CLI's start-up path, and 39 containers of three regions on one
machine once spent more than its two cores on it. This check reads what
`bookcluster run` recorded for the process (`<run_dir>/probes/<name>.json`: role
and addresses) and asks it with `bookcluster.stores.probe.check` (sockets and
`http.client`, no asyncio): the question and the decision are the ones of
`bookcluster probe` and `bookcluster status`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bookcluster.stores.probe import check, container_healthy
from bookcluster.topology.errors import RouterError
from bookcluster.topology.secrets import Secrets

TIMEOUT_S = 3.0


def probe_file(run_dir: Path, name: str) -> Path:
    return run_dir / "probes" / f"{name}.json"


def record(run_dir: Path, spec: dict[str, Any]) -> None:
    """What the check needs of a process about to run (by `bookcluster run`)."""
    path = probe_file(run_dir, spec["name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    keep = ("name", "region", "role", "host", "port", "address", "api", "source")
    path.write_text(json.dumps({k: spec.get(k) for k in keep}))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python3 -m bookcluster.deploy.health_check RUN_DIR NAME", file=sys.stderr)
        return 2
    run_dir, name = Path(args[0]), args[1]
    try:
        proc = json.loads(probe_file(run_dir, name).read_text())
        ok = container_healthy(proc, check(proc, Secrets(run_dir), TIMEOUT_S))
    except (OSError, ValueError, RouterError) as exc:  # a missing secret, too
        print(f"unhealthy: {type(exc).__name__}: {exc}")
        return 1
    print("healthy" if ok else "unhealthy")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
