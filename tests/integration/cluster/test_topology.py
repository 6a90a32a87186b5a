"""`bookcluster topology diff/apply` on a running cluster, and refusing maps that
disagree with the ownership the stores record (launcher, nodes, apply).

A dedicated cluster for the module: its epoch goes up from test to test.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from bookcluster.local.ports import free_ports
from bookcluster.ops import apply
from bookcluster.ops.applied import StaleTopology, check_not_older, pull_command, stored_for_start
from bookcluster.ops.ownership import OwnershipConflict
from bookcluster.ops.seed import seed_cluster
from bookcluster.topology.document import with_changes
from bookcluster.topology.load import load_topology
from bookcluster.topology.model import Endpoint
from tests.integration.cluster.movable import epoch_of, movable_cluster
from tests.integration.conftest import Cluster


@pytest_asyncio.fixture(scope="module")
async def live() -> AsyncIterator[Cluster]:
    async with movable_cluster("bookcluster-topology-") as cluster:
        yield cluster


async def cluster_epoch(cluster: Cluster) -> int:
    return (await apply.applied(cluster.topology))[0]


def next_file(cluster: Cluster, tmp_path: Path, epoch: int, theatres: dict[str, str] | None = None,
              edit: Any = None) -> Path:
    text = with_changes(cluster.topology.path.read_text(), epoch, theatres or {})
    if edit is not None:
        text = edit(text)
    path = tmp_path / f"topology-{epoch}.yaml"
    path.write_text(text)
    return path


def processes(cluster: Cluster) -> dict[str, str]:
    """Every node and worker the launcher runs: name -> URL."""
    return {p["name"]: p["address"] for p in cluster.launcher.processes()
            if p["role"] in ("node", "worker")}


async def test_apply_reaches_every_node_and_worker(live: Cluster, tmp_path: Path,
                                                   http: aiohttp.ClientSession,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    epoch = await cluster_epoch(live)
    file = next_file(live, tmp_path, epoch + 1)
    started = time.monotonic()
    assert await apply.apply_command(live.topology, file) == 0
    took = time.monotonic() - started
    out = capsys.readouterr().out
    epochs = {name: await epoch_of(http, address) for name, address in processes(live).items()}
    assert set(epochs.values()) == {epoch + 1}, epochs
    assert len(epochs) == 3 * 2 + 3  # two nodes and a worker per region
    assert all(name in out for name in epochs), out
    assert load_topology(live.topology.path).epoch == epoch + 1  # the cluster's file too
    print(f"apply of epoch {epoch + 1}: every process reported it {took:.3f}s after start")


async def test_node_started_with_the_previous_file_corrects_itself(
        live: Cluster, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    epoch = await cluster_epoch(live)
    old = tmp_path / "previous.yaml"
    old.write_text(with_changes(live.topology.path.read_text(), epoch - 1, {}))
    file_topology = load_topology(old, run_dir=live.topology.settings.run_dir)
    assert file_topology.epoch == epoch - 1
    port = free_ports(1)[0]
    spec_topology = live.launcher.topology
    live.launcher.topology = file_topology
    try:
        await live.launcher.start_extra_node("north", Endpoint("127.0.0.1", port), [])
    finally:
        live.launcher.topology = spec_topology
    assert await epoch_of(http, f"http://127.0.0.1:{port}") == epoch


async def test_apply_is_rolled_back_when_a_process_cannot_take_it(
        live: Cluster, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    epoch = await cluster_epoch(live)
    file = next_file(live, tmp_path, epoch + 1)
    stopped = live.launcher.child("south.node.2")
    stopped.popen.send_signal(19)  # SIGSTOP: it cannot answer
    try:
        with pytest.raises(apply.ApplyFailed, match="south.node.2") as failed:
            await apply.apply_command(live.topology, file)
    finally:
        stopped.popen.send_signal(18)
    assert f"stays at {epoch}" in str(failed.value)
    epochs = {name: await epoch_of(http, address) for name, address in processes(live).items()}
    assert set(epochs.values()) == {epoch}, epochs
    assert await cluster_epoch(live) == epoch
    for region in live.topology.regions:
        rows = await live.fetch(region, "SELECT epoch FROM cluster_topology WHERE epoch > $1",
                                epoch)
        assert not rows


async def test_apply_refuses_what_a_running_cluster_cannot_take(live: Cluster,
                                                              tmp_path: Path) -> None:
    epoch = await cluster_epoch(live)
    with pytest.raises(apply.ApplyFailed, match=f"a new topology has epoch {epoch + 1}"):
        await apply.apply_command(live.topology, next_file(live, tmp_path, epoch + 2))
    restart = next_file(live, tmp_path, epoch + 1,
                        edit=lambda t: t.replace("sweep_interval: 500ms", "sweep_interval: 2s"))
    with pytest.raises(apply.ApplyFailed, match="need a restart") as refused:
        await apply.apply_command(live.topology, restart)
    assert "settings.sweep_interval_s: 0.5 -> 2.0" in str(refused.value)
    moved = next_file(live, tmp_path, epoch + 1, {"pune-01": "north"})
    with pytest.raises(OwnershipConflict) as conflict:
        await apply.apply_command(live.topology, moved)
    text = str(conflict.value)
    assert "pune-01" in text and "west owns it" in text
    assert "bookcluster topology move pune-01 --to north" in text
    assert await apply.apply_command(live.topology, next_file(live, tmp_path, epoch + 1),
                                     dry_run=True) == 0
    assert await cluster_epoch(live) == epoch


async def test_diff_names_moves_nodes_and_restarts(live: Cluster, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    epoch = await cluster_epoch(live)
    port = free_ports(1)[0]

    def edit(text: str) -> str:
        text = text.replace("sweep_interval: 500ms", "sweep_interval: 1s")
        first = live.topology.region("west").nodes[0]
        return text.replace(f"[{first}", f"[127.0.0.1:{port}, {first}", 1)

    file = next_file(live, tmp_path, epoch + 1, {"pune-01": "north"}, edit)
    assert await apply.diff_command(live.topology, file, as_json=True) == 0
    changes = json.loads(capsys.readouterr().out)
    assert changes["epoch"] == {"from": epoch, "to": epoch + 1}
    assert changes["theatres"] == [{"theatre": "pune-01", "before": "west", "after": "north",
                                    "how": "map"}]
    assert changes["nodes"] == {"west": {"nodes_added": [f"127.0.0.1:{port}"]}}
    assert changes["restart_needed"] == ["settings.sweep_interval_s: 0.5 -> 1.0"]
    await apply.diff_command(live.topology, file)
    text = capsys.readouterr().out
    assert "bookcluster topology move pune-01 --to north" in text and "needs a restart" in text


# Before the tests that start a node which exits: a dead extra node fails every later apply.
async def test_an_older_file_is_told_and_pulled(live: Cluster, tmp_path: Path, catalog: Any,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """After an apply, the file of the epoch before (a `git checkout topology.yaml`) is
    refused at start, before the ownership check, naming pull first and
    `--stored-topology` second; `topology pull` writes the applied one back; `topology
    diff` of the applied file says "no change"."""
    epoch = await cluster_epoch(live)
    old = next_file(live, tmp_path, epoch)
    assert await apply.apply_command(live.topology, next_file(live, tmp_path, epoch + 1)) == 0
    stale = load_topology(old, run_dir=live.topology.settings.run_dir)
    with pytest.raises(StaleTopology) as refused:
        await seed_cluster(stale, catalog, progress=lambda _: None)
    message = str(refused.value)
    assert message.index("topology pull") < message.index("up --stored-topology"), message
    with pytest.raises(StaleTopology):
        check_not_older(stale)  # the next start says so before starting anything
    assert stored_for_start(stale).epoch == epoch + 1
    capsys.readouterr()
    assert await pull_command(stale, None) == 0
    assert load_topology(old).epoch == epoch + 1
    assert old.read_text() == (await apply.applied(live.topology))[1]
    assert f"epoch {epoch + 1} written" in capsys.readouterr().out
    assert await apply.diff_command(live.topology, old) == 0
    assert capsys.readouterr().out.strip() == "no change"


async def test_launcher_refuses_a_map_that_disagrees(live: Cluster, tmp_path: Path,
                                                     catalog: Any) -> None:
    """Restarting with topology.yaml edited to move a theatre would seed or orphan its
    seats: the launcher's seeding step refuses, naming it and the fix."""
    epoch = await cluster_epoch(live)
    file = next_file(live, tmp_path, epoch, {"bengaluru-01": "west"})
    topology = load_topology(file, run_dir=live.topology.settings.run_dir)
    with pytest.raises(OwnershipConflict) as conflict:
        await seed_cluster(topology, catalog, progress=lambda _: None)
    assert "bengaluru-01" in str(conflict.value)
    assert "topology move bengaluru-01 --to west" in str(conflict.value)
    rows = await live.fetch("west", "SELECT count(*) AS n FROM show_seat s JOIN show sh "
                            "ON sh.id = s.show_id JOIN screen sc ON sc.id = sh.screen_id "
                            "WHERE sc.theatre_id = 'bengaluru-01'")
    assert rows[0]["n"] == 0


async def test_node_refuses_a_map_that_disagrees(live: Cluster, tmp_path: Path) -> None:
    """A node whose file is newer than anything applied, and places a theatre away from
    its owner, does not start; its log says which theatre and how to fix it."""
    epoch = await cluster_epoch(live)
    file = next_file(live, tmp_path, epoch + 5, {"delhi-01": "south"})
    topology = load_topology(file, run_dir=live.topology.settings.run_dir)
    port = free_ports(1)[0]
    spec_topology = live.launcher.topology
    live.launcher.topology = topology
    try:
        with pytest.raises(RuntimeError, match="exited during start-up"):
            await live.launcher.start_extra_node("north", Endpoint("127.0.0.1", port), [])
    finally:
        live.launcher.topology = spec_topology
    log = live.launcher.supervisor.children[-1].spec.log_path.read_text()
    assert "delhi-01: placed in south, but north owns it" in log, log[-2000:]
    assert "bookcluster topology move" in log
