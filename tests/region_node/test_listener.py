"""The supervised change listener: garbage on the channel, lost and silent
subscriptions, and an exception inside the loop (see `region_node/listener.py`)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from cluster import faults
from region_node import keys
from region_node.catalog import Catalog
from region_node.listener import DOWN_GRACE_S, SILENT_LIMIT_S, ChangeListener
from region_node.live import LiveHub
from region_node.metrics import NodeMetrics
from region_node.seatmap import SeatMaps
from router.placement import Placement
from router.registry import Connections, make_redis
from tests.conftest import Cluster
from tests.region_node.helpers import seats_of, shows_in
from tests.region_node.test_holds import hold
from tests.region_node.test_seatmaps import receive, seat_status
from tests.support import call, metric


async def publish(cluster: Cluster, region: str, *payloads: bytes | str) -> None:
    """PUBLISH on a region's master, as its scripts do (replicas carry it to every node)."""
    redis = make_redis(cluster.topology.region(region).redis_master, cluster.topology.secrets)
    try:
        for payload in payloads:
            await redis.publish(keys.SEAT_CHANGES_CHANNEL, payload)
    finally:
        await redis.aclose()


def garbage(show: int, version: int) -> list[bytes | str]:
    """Messages a listener must skip. Several name a cached show and its next
    version, so a listener that trusted them would patch (or crash on) that show."""
    next_ = {"show": show, "version": version + 1, "seats": ["A1"], "status": "BOOKED",
             "booking": "b0-x", "ts": int(time.time() * 1000)}
    return [
        b"not json", b"\xff\xfe\x00\x01", b"[" * 50_000, b"9" * 5000,
        "[1, 2, 3]", '"a string"', "null", "{}",
        json.dumps({"show": show}),
        json.dumps({**next_, "status": "LOCKED"}),  # a hold without expires_at
        json.dumps({**next_, "version": str(version + 1)}),
        json.dumps({**next_, "show": str(show)}),
        json.dumps({**next_, "seats": [1, 2]}),
        json.dumps({**next_, "seats": "A1"}),
        json.dumps({**next_, "status": "SOLD"}),
        json.dumps({**next_, "booking": {"id": 1}}),
        json.dumps({**next_, "version": 10 ** 30}),
        json.dumps({**next_, "ts": 10 ** 400}),
        json.dumps({**next_, "version": float("inf")}),  # Infinity: valid to Python's json
    ]


async def readyz(http: aiohttp.ClientSession, node: str) -> tuple[int, Any]:
    return await call(http, "GET", f"{node}/readyz")


async def test_garbage_is_counted_and_skipped_and_changes_keep_flowing(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "south")[0]
    seat = seats_of(catalog, show, 1)[0]
    north, west = clean.node("north"), clean.node("west")
    version, _ = await seat_status(http, north, show)  # cached on north
    fills = await metric(http, north, "bookcluster_seat_cache_fills_total")
    before = {n: (await metric(http, n, "bookcluster_listener_malformed_total", source="south"),
                  await metric(http, n, "bookcluster_listener_restarts_total"))
              for n in (north, west)}
    async with http.ws_connect(f"{west}/shows/{show}/live") as ws:
        snapshot = await receive(ws)
        assert snapshot["version"] == version
        junk = garbage(show, version)
        await publish(clean, "south", *junk)

        started = time.monotonic()
        status, _ = await hold(http, clean.node("south"), show, "u", [seat])
        assert status == 201
        delta = await receive(ws, within=1.0)
        assert delta == {**delta, "type": "delta", "version": version + 1,
                         "status": "LOCKED", "seats": [seat]}
        while (await seat_status(http, north, show))[1][seat] != "LOCKED":
            assert time.monotonic() - started < 1.0, "north did not see the hold within 1 s"
            await asyncio.sleep(0.05)
    # Patched from the message, not refilled: the garbage did not drop the entry either.
    assert await metric(http, north, "bookcluster_seat_cache_fills_total") == fills
    for node in (north, west):
        malformed, restarts = before[node]
        # Changes arrive in order, so by now every node has read all of the garbage.
        assert await metric(http, node, "bookcluster_listener_malformed_total",
                            source="south") == malformed + len(junk), node
        assert await metric(http, node, "bookcluster_listener_restarts_total") == restarts
        assert await metric(http, node, "bookcluster_listener_malformed_total",
                            source="south", reason="not_json") >= 4
        status, body = await readyz(http, node)
        assert status == 200 and body["listeners"]["south"]["subscribed"], body


async def test_killed_subscription_is_counted_and_recovers(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    north = clean.node("north")
    _, body = await readyz(http, north)
    restarts = body["listeners"]["south"]["restarts"]
    lost = await metric(http, north, "bookcluster_listener_restarts_total", source="south",
                        reason="connection")
    replica = make_redis(clean.topology.region("north").redis_replicas["south"],
                         clean.topology.secrets)
    try:
        await replica.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    finally:
        await replica.aclose()
    deadline = time.monotonic() + 5
    while True:
        status, body = await readyz(http, north)
        listener = body["listeners"]["south"]
        if listener["restarts"] > restarts and listener["subscribed"]:
            break
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)
    assert status == 200 and body["checks"]["listener"]["south"] == "ok", body
    assert await metric(http, north, "bookcluster_listener_restarts_total", source="south",
                        reason="connection") > lost
    assert await metric(http, north, "bookcluster_listener_subscribed", source="south") == 1
    show = shows_in(clean, catalog, "south")[1]
    seat = seats_of(catalog, show, 1)[0]
    await seat_status(http, north, show)
    await hold(http, clean.node("south"), show, "u", [seat])
    await asyncio.sleep(0.3)
    assert (await seat_status(http, north, show))[1][seat] == "LOCKED"


async def test_a_silent_replica_makes_the_node_unready_until_it_answers(
        clean: Cluster, http: aiohttp.ClientSession) -> None:
    north = clean.node("north")
    silent = await metric(http, north, "bookcluster_listener_restarts_total", source="south",
                          reason="silent")
    replica = clean.launcher.child("north.redis.replica.south").pid
    with faults.paused(replica):  # its TCP connections stay open: only PINGs can tell
        deadline = time.monotonic() + SILENT_LIMIT_S + DOWN_GRACE_S + 5
        while True:
            status, body = await readyz(http, north)
            if status == 503:
                break
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.2)
    assert body["checks"]["listener"]["south"].startswith("down since "), body
    assert body["checks"]["listener"]["north"] == "ok"
    assert not body["listeners"]["south"]["subscribed"]
    assert body["checks"]["redis"] == body["checks"]["postgres"] == "ok"
    deadline = time.monotonic() + 10  # the backoff has grown to a few seconds
    while (status := (await readyz(http, north))[0]) != 200:
        assert time.monotonic() < deadline, "not ready again after the replica resumed"
        await asyncio.sleep(0.2)
    assert await metric(http, north, "bookcluster_listener_restarts_total", source="south",
                        reason="silent") > silent


class ExplodingHub(LiveHub):
    """A hub that raises on every change of one show: a bug in the loop, injected."""

    def __init__(self, show: int) -> None:
        async def no_snapshot(_: int) -> dict[str, Any]:
            raise AssertionError("no sockets here")

        super().__init__(no_snapshot)
        self.show = show

    async def publish(self, message: dict[str, Any]) -> None:
        if message["show"] == self.show:
            raise RuntimeError(f"injected failure on show {self.show}")
        await super().publish(message)


@dataclass
class InProcess:
    listener: ChangeListener
    seatmaps: SeatMaps
    metrics: NodeMetrics
    catalog: Catalog
    show: int  # a south show whose changes make the hub raise

    def sample(self, name: str, **labels: str) -> float:
        """Sum of the samples `name` whose labels include `labels`."""
        return sum(s.value for family in self.metrics.registry.collect()
                   for s in family.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    async def cache(self, show: int) -> int:
        """Read a show into the cache; its version."""
        return (await self.seatmaps.entry(await self.catalog.show(show))).state.version

    async def resubscribed(self, resets: float) -> None:
        deadline = time.monotonic() + 5
        while not (self.listener.sources["south"].subscribed and self.sample(
                "bookcluster_subscription_resets_total", source="south") > resets):
            assert time.monotonic() < deadline, "the listener did not resubscribe"
            await asyncio.sleep(0.05)


@pytest.fixture
async def node(clean: Cluster, catalog: Any) -> AsyncIterator[InProcess]:
    """A listener in this process, as a north node runs it, whose hub fails on one
    south show."""
    show = shows_in(clean, catalog, "south")[0]
    metrics = NodeMetrics("north")
    async with Connections(clean.topology, "north") as connections:
        node_catalog = Catalog(connections, Placement(clean.topology))
        await node_catalog.load()
        seatmaps = SeatMaps(connections, node_catalog, metrics)
        hub = ExplodingHub(show)
        listener = ChangeListener(connections, node_catalog, seatmaps, hub, metrics)
        listener.start()
        try:
            await asyncio.wait_for(asyncio.gather(
                *(event.wait() for event in listener.subscribed.values())), 5)
            yield InProcess(listener, seatmaps, metrics, node_catalog, show)
        finally:
            await listener.close()
            await hub.close()


async def test_an_exception_in_the_loop_is_logged_counted_and_survived(
        node: InProcess, clean: Cluster, http: aiohttp.ClientSession, catalog: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    south, other = shows_in(clean, catalog, "south")[1], shows_in(clean, catalog, "west")[0]
    for show in (node.show, south, other):
        await node.cache(show)
    resets = node.sample("bookcluster_subscription_resets_total", source="south")

    await hold(http, clean.node("south"), node.show, "u", seats_of(catalog, node.show, 1))
    await node.resubscribed(resets)
    assert node.sample("bookcluster_listener_restarts_total", source="south",
                       reason="error") == 1
    # That region's shows were dropped (changes may have been missed), and only those.
    assert node.seatmaps.cache.peek(node.show) is None
    assert node.seatmaps.cache.peek(south) is None
    assert node.seatmaps.cache.peek(other) is not None
    failure = next(r for r in caplog.records
                   if r.name == "region_node.listener" and r.levelno == logging.ERROR)
    assert "south" in failure.getMessage() and failure.exc_info is not None
    # It hears south again.
    version = await node.cache(south)
    await hold(http, clean.node("south"), south, "v", seats_of(catalog, south, 1))
    deadline = time.monotonic() + 1
    while (entry := node.seatmaps.cache.peek(south)) is None or entry.state.version == version:
        assert time.monotonic() < deadline, "no change heard after the restart"
        await asyncio.sleep(0.05)
    assert entry.state.version == version + 1


async def test_a_listener_task_that_ends_is_restarted(
        node: InProcess, caplog: pytest.LogCaptureFixture) -> None:
    resets = node.sample("bookcluster_subscription_resets_total", source="south")
    task = next(t for t in asyncio.all_tasks() if t.get_name() == "listen-south")
    task.cancel()  # as a stranger would: not through close()
    await node.resubscribed(resets)
    assert node.sample("bookcluster_listener_restarts_total", source="south",
                       reason="ended") == 1
    assert any("ended (cancelled)" in r.getMessage() for r in caplog.records)


async def test_malformed_messages_warn_at_most_once_per_interval(
        node: InProcess, clean: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    await publish(clean, "south", "not json", "[]", '{"show": 1}')
    deadline = time.monotonic() + 1
    while node.sample("bookcluster_listener_malformed_total", source="south") < 3:
        assert time.monotonic() < deadline, "the garbage was not counted"
        await asyncio.sleep(0.05)
    warnings = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert node.sample("bookcluster_listener_malformed_total", source="south",
                       reason="not_object") == 1
    assert node.listener.sources["south"].unwarned == 2
    assert node.sample("bookcluster_listener_restarts_total") == 0
