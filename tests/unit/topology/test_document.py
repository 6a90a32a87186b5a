"""The operator's topology file edited for a move: only the lines the move means change."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from bookcluster.topology.document import edit_file, unintended, with_changes
from bookcluster.topology.errors import TopologyError
from bookcluster.topology.load import parse_topology

REPO_TOPOLOGY = Path(__file__).resolve().parents[3] / "topology.yaml"

# Custom order (theatres before regions, not sorted), comments everywhere, a block list.
CUSTOM = """\
# my cluster
theatres:
  # the big ones first
  zeta-01: north   # flagship
  alpha-01: north
  'mid-01': north
regions:
  north:
    redis:
      master: 127.0.0.1:6410
      replicas: {north: 127.0.0.1:6411, south: 127.0.0.1:6412}
    postgres:
      primary: 127.0.0.1:5510
    nodes:
      - 127.0.0.1:8101   # the only node
  south:
    redis: {master: 127.0.0.1:6420, replicas: {north: 127.0.0.1:6421, south: 127.0.0.1:6422}}
    postgres: {primary: 127.0.0.1:5520}
    nodes: [127.0.0.1:8201]
epoch: 4   # bumped by moves
"""


def changed(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(),
                                                   lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_a_move_changes_only_the_epoch_and_the_theatre_line() -> None:
    after = edit_file(CUSTOM, 5, {"alpha-01": "south"})
    assert changed(CUSTOM, after) == [
        "-  alpha-01: north", "+  alpha-01: south",
        "-epoch: 4   # bumped by moves", "+epoch: 5   # bumped by moves"]
    parsed = parse_topology(after, Path("t.yaml"))
    assert parsed.epoch == 5 and dict(parsed.theatres)["alpha-01"] == "south"


def test_the_repo_file_keeps_its_order_and_comments() -> None:
    text = REPO_TOPOLOGY.read_text()
    epoch = parse_topology(text, REPO_TOPOLOGY).epoch
    after = edit_file(text, epoch + 1, {"noida-02": "west"})
    assert changed(text, after) == [
        f"-epoch: {epoch}", f"+epoch: {epoch + 1}",
        "-  noida-02: north", "+  noida-02: west"]


def test_a_theatre_not_in_the_map_gets_one_line_at_its_end() -> None:
    after = edit_file(CUSTOM, 5, {"new-01": "south"})
    lines = after.splitlines()
    assert lines.index("  new-01: south") == lines.index("  'mid-01': north") + 1
    assert len(changed(CUSTOM, after)) == 3  # the epoch's two lines and the new entry


def test_a_file_without_epoch_or_map_gets_them() -> None:
    bare = CUSTOM.replace("epoch: 4   # bumped by moves\n", "")
    bare = bare[bare.index("regions:"):]
    after = with_changes(bare, 2, {"x-01": "north"})
    parsed = parse_topology(after, Path("t.yaml"))
    assert parsed.epoch == 2 and dict(parsed.theatres) == {"x-01": "north"}


def test_an_edit_that_touches_other_lines_is_refused() -> None:
    # What the line check guards against: an editor that rewrites more than it means.
    assert unintended(CUSTOM, CUSTOM.replace("127.0.0.1:8201", "127.0.0.1:8202"), {}) == [
        "    nodes: [127.0.0.1:8201]", "    nodes: [127.0.0.1:8202]"]
    assert unintended(CUSTOM, CUSTOM.replace("zeta-01: north", "zeta-01: south"),
                      {"zeta-01": "south"}) == []
    with pytest.raises(TopologyError, match="would also change"):
        edit_file(CUSTOM.replace("      - 127.0.0.1:8101", "      -   127.0.0.1:8101"), 5,
                  {"alpha-01": "south"})
