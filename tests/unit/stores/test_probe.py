"""The one prober's readers and decisions (`bookcluster.stores.probe`): what an answer
says, without a server. The asking itself is tested against real servers in
tests/integration (status, the operator page, the container check)."""

from __future__ import annotations

from typing import Any

import pytest

from bookcluster.stores import probe

INFO_MASTER = """# Replication\r
role:master\r
connected_slaves:1\r
slave0:ip=127.0.0.1,port=6411,state=online,offset=4242,lag=0\r
master_replid:8d9f\r
master_repl_offset:4242\r
\r
"""
INFO_REPLICA = """# Replication
role:slave
master_host:::1
master_port:6410
master_link_status:down
slave_repl_offset:4000
"""


def test_info_is_read_field_by_field_and_a_value_may_hold_colons() -> None:
    fields = probe.parse_info(INFO_REPLICA)
    assert fields["role"] == "slave" and fields["master_host"] == "::1"
    assert "# Replication" not in fields and "" not in fields
    assert probe.parse_info(INFO_MASTER)["master_repl_offset"] == "4242"


def test_a_master_is_healthy_and_reports_its_offset() -> None:
    found = probe.read_replication(probe.parse_info(INFO_MASTER))
    assert found == probe.Replication("master", 4242)
    assert found.healthy
    assert found.row() == {"healthy": True, "redis_role": "master", "repl_offset": 4242}


@pytest.mark.parametrize(("link", "healthy"), [("up", True), ("down", False), (None, False)])
def test_a_replica_is_healthy_only_while_its_link_is_up(link: str | None,
                                                       healthy: bool) -> None:
    text = INFO_REPLICA.replace("master_link_status:down\n",
                                "" if link is None else f"master_link_status:{link}\n")
    found = probe.read_replication(probe.parse_info(text))
    assert found.role == "replica" and found.healthy is healthy
    assert found.row() == {"healthy": healthy, "redis_role": "replica", "link": link,
                           "master": "::1:6410", "repl_offset": 4000}


def test_an_offset_that_is_not_a_number_is_none_not_an_error() -> None:
    found = probe.read_replication({"role": "master", "master_repl_offset": "?"})
    assert found.offset is None and found.healthy


def sentinel_state(name: str, port: int, flags: str) -> list[str]:
    return ["name", name, "ip", "127.0.0.1", "port", str(port), "runid", "ab12",
            "flags", flags, "num-slaves", "2", "num-other-sentinels", "1", "quorum", "1"]


def test_sentinel_masters_are_read_from_flat_field_lists() -> None:
    reply = [sentinel_state("north", 6410, "master"),
             sentinel_state("west", 6430, "master,s_down,o_down")]
    assert probe.read_sentinel_masters(reply) == {
        "north": {"address": "127.0.0.1:6410", "flags": "master", "replicas": 2,
                  "other_sentinels": 1},
        "west": {"address": "127.0.0.1:6430", "flags": "master,s_down,o_down", "replicas": 2,
                 "other_sentinels": 1}}
    assert probe.read_sentinel_masters([]) == {}
    assert probe.read_sentinel_masters(None) == {}


def test_where_a_sentinel_sees_a_master() -> None:
    assert probe.read_master_addr(["127.0.0.1", "6410"]) == ("127.0.0.1", 6410)
    assert probe.read_master_addr(None) is None  # a name it does not watch
    assert probe.read_master_addr(["127.0.0.1"]) is None


@pytest.mark.parametrize(("state", "healthy"), [
    ({"state": "running", "role": "primary"}, True),
    ({"state": "running", "role": "master"}, True),  # Patroni before 3.0 says master
    ({"state": "running", "role": "replica", "replication_state": "streaming"}, True),
    ({"state": "running", "role": "replica", "replication_state": "in archive recovery"},
     False),
    ({"state": "starting", "role": "primary"}, False),
    ({"state": "stopped", "role": "replica", "replication_state": "streaming"}, False),
    ({}, False),
])
def test_a_patroni_member_is_healthy_running_as_primary_or_streaming(
        state: dict[str, Any], healthy: bool) -> None:
    assert probe.read_patroni_member(state)["healthy"] is healthy


def test_the_cluster_view_names_the_leader_and_this_members_role_and_lag() -> None:
    view = {"members": [
        {"name": "north-1", "role": "leader", "api_url": "http://127.0.0.1:8008/patroni"},
        {"name": "north-2", "role": "sync_standby", "lag": 16,
         "api_url": "http://127.0.0.1:8009/patroni"}]}
    assert probe.read_patroni_cluster(view, "http://127.0.0.1:8009") == {
        "leader": "north-1", "member": "north-2", "pg_role": "sync_standby", "lag_bytes": 16}
    assert probe.read_patroni_cluster({"members": []}, "http://127.0.0.1:8009") == {
        "leader": None}


def test_etcd_and_our_processes() -> None:
    assert probe.read_etcd(200, {"health": "true"}) == {"healthy": True}
    assert probe.read_etcd(200, {"health": "false"}) == {"healthy": False}
    assert probe.read_etcd(503, None) == {"healthy": False}
    assert probe.read_healthz(200, {"ok": True, "epoch": 4}) == {"healthy": True, "epoch": 4}
    assert probe.read_healthz(200, None) == {"healthy": True}  # the gateway: no epoch
    assert probe.read_healthz(503, {"epoch": "4"}) == {"healthy": False}
    assert probe.read_readyz({"ready": False, "checks": {"redis": "down"}}) == {
        "up": True, "ready": False, "checks": {"redis": "down"}}
    assert probe.read_readyz(None) == {"up": True, "ready": False, "checks": {}}


def test_a_workers_metrics() -> None:
    text = "\n".join([
        "# TYPE bookcluster_queue_depth gauge",
        'bookcluster_queue_depth{region="north",state="waiting"} 3.0',
        'bookcluster_queue_depth{region="north",state="active"} 1.0',
        "# TYPE bookcluster_outbox_pending gauge",
        'bookcluster_outbox_pending{region="north"} 7.0',
        "# TYPE bookcluster_mirror_generation gauge",
        'bookcluster_mirror_generation{region="north"} 12.0',
        "# TYPE other_total counter",
        "other_total 5.0", ""])
    assert probe.read_worker_metrics(text) == {
        "up": True, "queue": {"waiting": 3, "active": 1}, "outbox_pending": 7,
        "mirror_generation": 12}


def test_lag_is_never_negative_and_unknown_without_both_offsets() -> None:
    assert probe.lag_bytes(100, 40) == 60
    assert probe.lag_bytes(40, 100) == 0  # read a moment apart
    assert probe.lag_bytes(None, 40) is None and probe.lag_bytes(100, None) is None


REPLICA_OF_WEST = {"role": "redis-replica", "region": "north", "source": "west"}
REPLICA_OF_NORTH = {"role": "redis-replica", "region": "north", "source": "north"}


@pytest.mark.parametrize(("proc", "row", "healthy"), [
    ({"role": "redis-master", "region": "north"}, {"healthy": True}, True),
    (REPLICA_OF_NORTH, {"healthy": False, "redis_role": "replica", "link": "down"}, False),
    # Another region's master may be down (its host): its replica here answers, that is all.
    (REPLICA_OF_WEST, {"healthy": False, "redis_role": "replica", "link": "down"}, True),
    (REPLICA_OF_WEST, {"healthy": False, "error": "ConnectionRefusedError"}, False),
    ({"role": "redis-master", "region": "north"},
     {"healthy": False, "redis_role": "replica", "link": "down"}, False),
    ({"role": "node", "region": "north"}, {"healthy": False}, False),
])
def test_the_container_checks_decision(proc: dict[str, Any], row: dict[str, Any],
                                       healthy: bool) -> None:
    assert probe.container_healthy(proc, row) is healthy


def test_one_resp_conversation_is_auth_then_the_command() -> None:
    assert probe._resp_request("secret", ["INFO", "replication"]) == (
        b"*2\r\n$4\r\nAUTH\r\n$6\r\nsecret\r\n*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n")


def test_replies_are_taken_whole_however_they_arrive() -> None:
    stream = b"+OK\r\n$13\r\nrole:master\r\n\r\n"
    reader, replies = probe._resp_reader(), list[Any]()
    for i in range(len(stream)):  # a byte at a time
        assert not probe._resp_take(reader, replies)
        reader.feed(stream[i:i + 1])
    assert probe._resp_take(reader, replies)
    assert replies == ["OK", "role:master\r\n"]


def test_an_error_reply_is_raised_as_a_connection_error() -> None:
    reader, replies = probe._resp_reader(), list[Any]()
    reader.feed(b"-WRONGPASS invalid username-password pair\r\n")
    with pytest.raises(ConnectionError, match="WRONGPASS"):
        probe._resp_take(reader, replies)
