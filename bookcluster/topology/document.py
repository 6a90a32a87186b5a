"""The topology as a document: a stored (applied) epoch read like the operator's file,
and the file's text edited for a new epoch.

A move rewrites two things in the file: `epoch:` and the `theatres:` map (sorted,
one entry a line; comments inside that block are not kept). Everything else,
comments included, stays as the operator wrote it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from bookcluster.topology.errors import TopologyError
from bookcluster.topology.load import parse_topology
from bookcluster.topology.model import Topology

EPOCH_LINE = re.compile(r"^epoch:.*$", re.MULTILINE)
TOP_LEVEL = re.compile(r"^[A-Za-z_]")


def with_changes(text: str, epoch: int, theatres: Mapping[str, str]) -> str:
    """`text` at `epoch`, its explicit map updated with `theatres` (theatre -> region)."""
    parsed = parse_topology(text, Path("topology.yaml"))
    mapping = {**parsed.theatres, **theatres}
    if EPOCH_LINE.search(text):
        text = EPOCH_LINE.sub(f"epoch: {epoch}", text, count=1)
    else:
        text = f"epoch: {epoch}\n" + text
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith("theatres:")), None)
    block = ["theatres:\n"] + [f"  {t}: {r}\n" for t, r in sorted(mapping.items())]
    if start is None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines += block
    else:
        end = start + 1
        while end < len(lines) and not TOP_LEVEL.match(lines[end]):
            end += 1
        while end > start + 1 and lines[end - 1].lstrip().startswith("#"):
            end -= 1  # a comment just above the next key belongs to that key
        lines[start:end] = block
    out = "".join(lines)
    check = parse_topology(out, Path("topology.yaml"))
    assert check.epoch == epoch and dict(check.theatres) == mapping, "topology edit failed"
    return out



def parse_stored(document: str, like: Topology) -> Topology:
    """A stored (applied) topology document, read as if it were `like`'s file."""
    try:
        return parse_topology(document, like.path, like.settings.run_dir)
    except TopologyError as exc:
        raise TopologyError(f"{like.path} (as applied to the cluster)", exc.key,
                            exc.reason, exc.line) from None
