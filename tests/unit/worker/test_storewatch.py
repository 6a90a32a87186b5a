"""Replica lag as the worker reads it from its master's `INFO replication`."""

from __future__ import annotations

from bookcluster.worker.storewatch import replica_lags


def test_each_replica_lags_by_the_bytes_it_has_not_acknowledged() -> None:
    info = {"role": "master", "connected_slaves": 2, "master_repl_offset": 5000,
            "slave0": {"ip": "10.0.1.5", "port": 6380, "state": "online", "offset": 5000,
                       "lag": 0},
            "slave1": {"ip": "10.0.2.5", "port": 6381, "state": "online", "offset": 1200,
                       "lag": 1},
            "second_repl_offset": -1}
    assert replica_lags(info) == {"10.0.1.5:6380": 0, "10.0.2.5:6381": 3800}


def test_a_replica_ahead_of_the_read_offset_is_not_negative() -> None:
    info = {"role": "master", "master_repl_offset": 100,
            "slave0": {"ip": "h", "port": 1, "offset": 150}}
    assert replica_lags(info) == {"h:1": 0}


def test_a_server_that_is_no_master_is_no_leader() -> None:
    assert replica_lags({"role": "slave", "master_repl_offset": 10}) is None
    assert replica_lags({"role": "master", "master_repl_offset": 10}) == {}
