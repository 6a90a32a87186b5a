"""The topology as a document: a stored (applied) epoch read like the operator's file,
and the file's text edited for a new epoch.

The file is the operator's: an edit goes through a round-trip YAML editor
(ruamel.yaml), so its order, comments, flow lists and spacing stay as written and only
the lines the operation means change: `epoch:`, and the line of each theatre it maps
(a theatre not yet in the map gets one line at the end of `theatres:`).
"""

from __future__ import annotations

import difflib
import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from bookcluster.topology.errors import TopologyError
from bookcluster.topology.load import parse_topology
from bookcluster.topology.model import Topology


def _editor() -> YAML:
    editor = YAML()  # round-trip: comments, key order, flow style and quotes kept
    editor.preserve_quotes = True
    editor.width = 4096  # never re-wrap the operator's long lines (a node list)
    editor.indent(mapping=2, sequence=4, offset=2)
    return editor


def with_changes(text: str, epoch: int, theatres: Mapping[str, str]) -> str:
    """`text` at `epoch`, its explicit map updated with `theatres` (theatre -> region)."""
    parsed = parse_topology(text, Path("topology.yaml"))
    mapping = {**parsed.theatres, **theatres}
    editor = _editor()
    try:
        root: Any = editor.load(text)
    except YAMLError as exc:  # parse_topology read it: not expected, but say where
        raise TopologyError("topology.yaml", "", f"cannot edit: {exc}") from None
    if "epoch" in root:
        root["epoch"] = epoch
    else:
        root.insert(0, "epoch", epoch)
    if theatres:
        if not isinstance(root.get("theatres"), CommentedMap):
            root["theatres"] = CommentedMap()
        for theatre, region in theatres.items():
            if root["theatres"].get(theatre) != region:
                root["theatres"][theatre] = region
    out = io.StringIO()
    editor.dump(root, out)
    edited = out.getvalue()
    check = parse_topology(edited, Path("topology.yaml"))
    if check.epoch != epoch or dict(check.theatres) != mapping:
        raise TopologyError("topology.yaml", "theatres", "the edit did not read back as made")
    return edited


def edit_file(text: str, epoch: int, theatres: Mapping[str, str]) -> str:
    """`with_changes` for the operator's file, refused (TopologyError) if the editor
    would touch any line but `epoch:` and those of `theatres`."""
    edited = with_changes(text, epoch, theatres)
    others = unintended(text, edited, theatres)
    if others:
        raise TopologyError("topology.yaml", "", "a round-trip edit would also change "
                            + "; ".join(repr(line) for line in others[:3]))
    return edited


def unintended(before: str, after: str, theatres: Mapping[str, str]) -> list[str]:
    """The lines an edit changed (removed or added) other than `epoch:` and the map
    entries of `theatres`."""
    names = "|".join(re.escape(t) for t in theatres)
    entry = rf"|^\s+['\"]?({names})['\"]?\s*:" if names else ""
    meant = re.compile(r"^(epoch|theatres)\s*:" + entry)
    old, new = before.splitlines(), after.splitlines()
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new,
                                                      autojunk=False).get_opcodes():
        if op != "equal":
            out += [line for line in old[i1:i2] + new[j1:j2] if not meant.match(line)]
    return out


def parse_stored(document: str, like: Topology) -> Topology:
    """A stored (applied) topology document, read as if it were `like`'s file."""
    try:
        return parse_topology(document, like.path, like.settings.run_dir)
    except TopologyError as exc:
        raise TopologyError(f"{like.path} (as applied to the cluster)", exc.key,
                            exc.reason, exc.line) from None
