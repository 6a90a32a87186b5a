"""A file older than the cluster's applied topology is told before anything starts, with
the two ways out; `topology diff` of an unchanged file says so."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bookcluster.ops.applied import StaleTopology, check_not_older, stored_for_start
from bookcluster.ops.topology_file import diff
from bookcluster.topology.document import with_changes
from bookcluster.topology.load import load_topology
from bookcluster.topology.runstate import applied_copy, remember_applied

REPO_TOPOLOGY = Path(__file__).resolve().parents[3] / "topology.yaml"


def test_an_older_file_is_refused_with_pull_first(tmp_path: Path) -> None:
    file = tmp_path / "topology.yaml"
    shutil.copy(REPO_TOPOLOGY, file)
    run_dir = tmp_path / "run"
    topology = load_topology(file, run_dir)
    check_not_older(topology)  # no run folder: nothing to compare with
    run_dir.mkdir()
    remember_applied(run_dir, file.read_text())
    check_not_older(topology)  # the same epoch
    newer = with_changes(file.read_text(), topology.epoch + 2, {"noida-02": "west"})
    remember_applied(run_dir, newer)
    with pytest.raises(StaleTopology) as refused:
        check_not_older(topology)
    message = str(refused.value)
    assert message.index("topology pull") < message.index("up --stored-topology")
    assert f"epoch {topology.epoch + 2}" in message
    started = stored_for_start(topology)
    assert started.epoch == topology.epoch + 2 and started.path == applied_copy(run_dir)
    assert started.settings.run_dir == run_dir
    assert file.read_text() == REPO_TOPOLOGY.read_text()  # the operator's file untouched


def test_diff_of_an_unchanged_file_says_no_change() -> None:
    topology = load_topology(REPO_TOPOLOGY)
    assert diff(topology, topology, ["delhi-01"]).lines() == ["no change"]
