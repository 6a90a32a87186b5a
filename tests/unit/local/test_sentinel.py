"""When a sentinel told to watch an added region's master could fail it over: it knows
the region's own replica, reaches it, has its INFO, and the replica's link is up."""

from __future__ import annotations

from bookcluster.local.sentinel import _promotable
from bookcluster.topology.model import Endpoint

CANDIDATE = Endpoint("127.0.0.1", 7001)


def replica(port: int, **changes: object) -> dict[str, object]:
    state: dict[str, object] = {
        "ip": "127.0.0.1", "port": port, "is_slave": True, "is_sdown": False,
        "is_disconnected": False, "master-link-status": "ok", "slave-priority": 100,
        "info-refresh": 800}
    return {**state, **changes}


def test_the_regions_own_replica_in_sync_is_promotable() -> None:
    assert _promotable([replica(7002, **{"slave-priority": 0}), replica(7001)], CANDIDATE)


def test_not_yet_promotable() -> None:
    assert not _promotable([], CANDIDATE)  # not discovered yet
    assert not _promotable([replica(7002)], CANDIDATE)  # only another region's replica
    for changes in ({"is_disconnected": True}, {"is_sdown": True},
                    {"master-link-status": "err"}, {"slave-priority": 0},
                    {"info-refresh": 30_000}):
        assert not _promotable([replica(7001, **changes)], CANDIDATE), changes
