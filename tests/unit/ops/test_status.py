"""`bookcluster status`: its JSON fields (an interface) and its table, from probe rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bookcluster.ops import status
from bookcluster.topology.load import load_topology
from bookcluster.topology.model import Topology

REPO_TOPOLOGY = Path(__file__).resolve().parents[3] / "topology.yaml"


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(REPO_TOPOLOGY)


def rows(topology: Topology) -> list[dict[str, Any]]:
    north = topology.region("north")
    master = north.redis_master
    return [
        {"name": "north.redis.master", "region": "north", "role": "redis-master", "pid": 11,
         "host": master.host, "port": master.port, "address": str(master), "healthy": True,
         "redis_role": "master", "repl_offset": 900, "alive": True},
        {"name": "north.redis.sentinel", "region": "north", "role": "redis-sentinel",
         "pid": 12, "host": "127.0.0.1", "port": 26379, "address": "127.0.0.1:26379",
         "healthy": True, "alive": True,
         "sentinel_masters": {"north": {"address": str(master), "flags": "master",
                                        "replicas": 1, "other_sentinels": 2}}},
        {"name": "north.postgres.2", "region": "north", "role": "pg-member", "pid": 13,
         "host": "127.0.0.1", "port": 5433, "address": "127.0.0.1:5433", "healthy": False,
         "pg_role": "replica", "timeline": 3, "leader": "north-1", "lag_bytes": 64,
         "alive": True, "pg_state": "running"},
    ]


def test_the_json_report_keeps_its_fields(topology: Topology) -> None:
    state = {"launcher_pid": 10, "regions": ["north"], "processes": []}
    report = status.report(topology, state, rows(topology), running=True)
    assert list(report) == ["running", "launcher_pid", "regions", "redis_masters", "processes"]
    assert report["regions"] == ["north"] and report["running"] is True
    assert report["redis_masters"]["north"]["server"] == "north.redis.master"
    for proc in report["processes"]:
        assert list(proc) == list(status.JSON_FIELDS)  # every field, null when not known
    assert status.JSON_FIELDS == (
        "name", "region", "role", "pid", "host", "port", "address", "healthy", "source",
        "lag_bytes", "link", "epoch", "error", "api", "member", "pg_role", "leader",
        "timeline", "redis_role", "master", "repl_offset", "sentinel_masters")


def test_a_state_from_before_up_region_runs_every_region(topology: Topology) -> None:
    assert status.launcher_regions(topology, {"launcher_pid": 1}) == list(topology.regions)
    assert status.launcher_regions(topology, None) == []


def test_no_sentinel_answer_no_masters(topology: Topology) -> None:
    assert status.redis_masters(topology, rows(topology)[:1]) == {}


def test_the_table_says_what_each_process_is_now(topology: Topology,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    status.print_table(rows(topology))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["PROCESS", "ROLE", "PID", "ADDRESS", "HEALTH", "EPOCH", "LAG",
                                "NOW"]
    assert lines[2].split()[-2:] == ["ok", "master"]
    assert lines[4].endswith("DOWN            64 B       replica, timeline 3, leader north-1")
