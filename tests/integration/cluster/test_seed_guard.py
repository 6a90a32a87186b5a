"""A region seeded alone (`bookcluster up --region R`, a container's set-up) never seeds
a theatre another region owns: its seats were sold there, and seeding it fresh here
made two owners (far's seat map showed north's sold seats free; three were sold twice)."""

from __future__ import annotations

import pytest

from bookcluster.ops import region_setup
from bookcluster.topology.document import parse_stored, with_changes
from tests.integration.conftest import Cluster


async def test_a_map_placing_an_owned_theatre_here_is_refused_before_seeding(
        cluster: Cluster) -> None:
    theatre = next(t for t, r in sorted(cluster.topology.theatres.items()) if r == "north")
    moved_by_hand = parse_stored(
        with_changes(cluster.topology.path.read_text(), cluster.topology.epoch,
                     {theatre: "south"}), cluster.topology)
    lines: list[str] = []
    with pytest.raises(region_setup.RegionSetupError, match=theatre) as refused:
        await region_setup.check_others(moved_by_hand, "south", lines.append, wait_s=5)
    assert "north owns it" in str(refused.value) and "nothing was written" in str(refused.value)
    rows = await cluster.fetch("south", "SELECT state FROM theatre_owner WHERE theatre_id = $1",
                               theatre)
    assert [r["state"] for r in rows] != ["OWNED"], rows

    # The map the cluster runs: nothing owned elsewhere is placed in south.
    await region_setup.check_others(cluster.topology, "south", lines.append, wait_s=5)
