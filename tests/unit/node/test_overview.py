"""The operator page's data: each store as it is now (not its topology slot), lag on the
copy that lags, and only changes of leader or master listed as failovers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bookcluster.node.failovers import leader_changes
from bookcluster.node.overview import pg_members, redis_lags
from bookcluster.topology.load import load_topology

REPO_TOPOLOGY = Path(__file__).resolve().parents[3] / "topology.yaml"


def test_members_are_labelled_by_patroni_and_the_lag_follows_the_standby() -> None:
    north = load_topology(REPO_TOPOLOGY).region("north")
    first, second = map(str, north.pg_members)
    # After a switchover: the primary slot's server is now the standby.
    probes = [{"up": True, "role": "standby", "lsn": 900}, {"up": True, "role": "primary",
                                                            "lsn": 1000}]
    view = {"members": [
        {"name": "north-1", "host": first.split(":")[0], "port": int(first.split(":")[1]),
         "role": "sync_standby", "lag": 4096},
        {"name": "north-2", "host": second.split(":")[0], "port": int(second.split(":")[1]),
         "role": "leader"}]}
    members = pg_members(north, probes, view)
    assert [(m["address"], m["member"], m["role_now"]) for m in members] == [
        (first, "north-1", "sync_standby"), (second, "north-2", "leader")]
    assert members[0]["lag_bytes"] == 4096 and "lag_bytes" not in members[1]
    # Without Patroni's view: the servers' own word, and WAL positions behind the primary now.
    members = pg_members(north, probes, None)
    assert [m["role_now"] for m in members] == ["standby", "primary"]
    assert members[0]["lag_bytes"] == 100 and "lag_bytes" not in members[1]


def server(address: str, role: str, offset: int, **more: Any) -> dict[str, Any]:
    return {"address": address, "up": True, "role": role, "offset": offset, **more}


def test_redis_copies_lag_behind_the_master_sentinel_names_now() -> None:
    regions: dict[str, dict[str, Any]] = {
        "north": {"redis_master_now": {"up": True, "address": "n:2"},
                  "redis_master": server("n:1", "replica", 700),  # demoted by a switchover
                  "redis_replicas": [server("n:2", "master", 1000, source="north"),
                                     server("n:3", "replica", 500, source="south")]},
        "south": {"redis_master_now": {"up": True, "address": "s:1"},
                  "redis_master": server("s:1", "master", 600),
                  "redis_replicas": [server("s:2", "replica", 950, source="north"),
                                     server("s:3", "replica", 600, source="south")]},
    }
    redis_lags(regions)
    assert regions["north"]["redis_master"]["lag_bytes"] == 300
    assert "lag_bytes" not in regions["north"]["redis_replicas"][0]  # the master itself
    assert regions["south"]["redis_replicas"][0]["lag_bytes"] == 50
    assert regions["north"]["redis_replicas"][1]["lag_bytes"] == 100
    assert regions["south"]["redis_replicas"][1]["lag_bytes"] == 0


def test_restarts_are_not_failovers() -> None:
    history = [[1, 100, "no recovery target specified", "2026-12-07T09:00:00+00:00", "north-1"],
               [2, 200, "no recovery target specified", "2026-12-07T09:10:00+00:00", "north-1"],
               [3, 300, "no recovery target specified", "2026-12-07T09:20:00+00:00", "north-2"],
               [4, 400, "no recovery target specified", "2026-12-07T09:30:00+00:00", "north-2"],
               [5, 500, "no recovery target specified", "2026-12-07T09:40:00+00:00"]]
    # north-1 bootstrapped: its restarts (timelines 2, 3) are not listed; the switchover to
    # north-2 is; a line without its new leader is kept (it cannot be told).
    assert [e[0] for e in leader_changes(history, "north-1")] == [3, 5]
    assert [e[0] for e in leader_changes(history, None)] == [1, 3, 5]
    assert leader_changes([["bad"], {"x": 1}], "north-1") == []
