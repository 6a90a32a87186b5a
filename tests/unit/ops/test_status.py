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
        "timeline", "redis_role", "master", "repl_offset", "sentinel_masters", "now")


def test_a_state_from_before_up_region_runs_every_region(topology: Topology) -> None:
    assert status.launcher_regions(topology, {"launcher_pid": 1}) == list(topology.regions)
    assert status.launcher_regions(topology, None) == []


def test_no_sentinel_answer_no_masters(topology: Topology) -> None:
    assert status.redis_masters(topology, rows(topology)[:1]) == {}


def test_the_table_says_what_each_process_is_now(topology: Topology,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    status.print_table(rows(topology))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["PROCESS", "NOW", "ADDRESS", "HEALTH", "LAG", "EPOCH"]
    assert lines[2].split() == ["north.redis.master", "redis", "master", "(north)",
                                "127.0.0.1:6410", "ok"]
    assert lines[4].split() == ["north.postgres.2", "pg", "replica", "127.0.0.1:5433", "DOWN",
                                "64", "B"]
    assert "timeline" not in "\n".join(lines)  # a restart makes a new one: no failover


def cluster_rows(topology: Topology, *, switched: bool) -> list[dict[str, Any]]:
    """Every process of the local cluster as the launcher lists them (by kind, not by
    region); `switched`: north's Redis master and PostgreSQL leader moved to the standby
    and the replica (a switchover), so the topology's slots no longer say what they are."""
    out: list[dict[str, Any]] = []

    def add(name: str, region: str, role: str, address: str, **found: Any) -> None:
        host, _, port = address.rpartition(":")
        url = {"node": f"http://{address}", "pg-member": f"postgresql://{address}/bookcluster"
               }.get(role, f"redis://{address}")
        out.append({"name": name, "region": region, "role": role, "pid": 40000 + len(out),
                    "host": host, "port": int(port), "address": url, "healthy": True,
                    **found})

    for name, region in topology.regions.items():
        moved = switched and name == "north"
        add(f"{name}.redis.master", name, "redis-master", str(region.redis_master),
            redis_role="replica" if moved else "master", repl_offset=100)
        for source, ep in region.redis_replicas.items():
            promoted = switched and source == "north" and name == "north"
            add(f"{name}.redis.replica.{source}", name, "redis-replica", str(ep),
                source=source, redis_role="master" if promoted else "replica", lag_bytes=0)
    for name, region in topology.regions.items():
        for i, ep in enumerate(region.pg_members):
            leader = (i == 1) if switched and name == "north" else (i == 0)
            add(f"{name}.postgres.{i + 1}", name, "pg-member", str(ep), member=f"{name}-{i + 1}",
                pg_role="leader" if leader else "sync_standby", timeline=5,
                leader=f"{name}-2" if switched and name == "north" else f"{name}-1",
                **({} if leader else {"lag_bytes": 1_048_576}))
    for name, region in topology.regions.items():
        for i, ep in enumerate(region.nodes):
            add(f"{name}.node.{i + 1}", name, "node", str(ep), epoch=1)
    return out


def sentinel_masters(topology: Topology, switched: bool) -> dict[str, dict[str, Any]]:
    return {name: {"address": str(region.redis_replicas[name] if switched and name == "north"
                                  else region.redis_master), "flags": "master"}
            for name, region in topology.regions.items()}


def test_after_a_switchover_each_store_is_labelled_by_what_it_is(topology: Topology) -> None:
    found = cluster_rows(topology, switched=True)
    masters = sentinel_masters(topology, switched=True)
    label = {r["name"]: status.now(r, masters) for r in found}
    assert label["north.redis.master"] == "redis replica (north)"
    assert label["north.redis.replica.north"] == "redis master (north)"
    assert label["south.redis.master"] == "redis master (south)"
    assert label["north.postgres.1"] == "pg sync standby"
    assert label["north.postgres.2"] == "pg leader"
    lines = status.table(status.in_region_order(topology, found), masters)
    by_name = {line.split()[0]: line for line in lines[2:]}
    # The lag is on the member that lags: the standby, wherever its slot was.
    assert by_name["north.postgres.1"].rstrip().endswith("1,048,576 B")
    assert not by_name["north.postgres.2"].rstrip().endswith("B")


def test_the_table_fits_100_columns_in_region_order(topology: Topology) -> None:
    found = status.in_region_order(topology, cluster_rows(topology, switched=False))
    lines = status.table(found, sentinel_masters(topology, switched=False))
    assert max(map(len, lines)) <= status.WIDTH
    regions = [line.split()[0].split(".")[0] for line in lines[2:]]
    assert regions == sorted(regions, key=list(topology.regions).index)
    pg = [line.split()[0] for line in lines[2:] if ".postgres." in line]
    assert pg == [f"{r}.postgres.{i}" for r in topology.regions for i in (1, 2)]
    wide = status.table(found, None, wide=True)
    assert wide[0].split()[-4:] == ["STARTED", "AS", "PID", "DETAIL"]
    assert "http://127.0.0.1:8101" in "\n".join(wide)


def test_a_master_sentinel_does_not_name_is_said() -> None:
    row = {"name": "north.redis.master", "region": "north", "role": "redis-master",
           "host": "127.0.0.1", "port": 6410, "address": "redis://127.0.0.1:6410",
           "redis_role": "master"}
    masters = {"north": {"address": "127.0.0.1:6411", "flags": "master"}}
    assert status.now(row, masters) == "redis master (north), not Sentinel's"
    assert status.now(row, None) == "redis master (north)"
