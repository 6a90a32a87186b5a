"""The supervised change listener: garbage on the channel, lost and silent
subscriptions, and an exception inside the loop (see `bookcluster/seats/feed.py`)."""

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

from bookcluster.catalog import Catalog
from bookcluster.local import faults
from bookcluster.metrics import NodeMetrics
from bookcluster.seats import keys
from bookcluster.seats.feed import DOWN_GRACE_S, SILENT_LIMIT_S, ChangeListener
from bookcluster.seats.live import LiveHub
from bookcluster.seats.maps import SeatMaps
from bookcluster.seats.state import SeatState, read_seat_state
from bookcluster.stores.connections import Connections, make_redis
from bookcluster.topology.placement import Placement
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_holds import hold
from tests.integration.node.test_seatmaps import invalidate, receive, seat_status
from tests.integration.support import call, metric


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
                   if r.name == "bookcluster.seats.feed" and r.levelno == logging.ERROR)
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


# -- fan-out proportional to interest ---------------------------------------------

async def followers(cluster: Cluster, region: str, show: int) -> int:
    """How many of `region`'s nodes subscribe to a show's channel (PUBSUB NUMSUB on
    their replica of its home master): only they are sent its changes."""
    home = cluster.placement.region_of(next(
        r["theatre_id"] for r in await cluster.fetch(
            "north", "SELECT sc.theatre_id FROM show s JOIN screen sc ON sc.id = s.screen_id "
            "WHERE s.id = $1", show)))
    replica = make_redis(cluster.topology.region(region).redis_replicas[home],
                         cluster.topology.secrets)
    try:
        ((_, count),) = await replica.pubsub_numsub(keys.show_changes(show))
    finally:
        await replica.aclose()
    return int(count)


async def until_followers(cluster: Cluster, region: str, show: int, want: int) -> None:
    deadline = time.monotonic() + 2
    while (count := await followers(cluster, region, show)) != want:
        assert time.monotonic() < deadline, f"{count} followers in {region}, want {want}"
        await asyncio.sleep(0.05)


async def test_a_node_is_sent_only_the_changes_of_shows_it_serves(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "south")[-1]
    a, b = seats_of(catalog, show, 2)
    north, west = clean.node("north"), clean.node("west")
    await invalidate(clean, show)  # no node caches it now, so none follows it
    await until_followers(clean, "west", show, 0)
    await seat_status(http, north, show)  # north follows it
    assert await followers(clean, "north", show) >= 1
    absent = await metric(http, west, "bookcluster_seat_changes_total", source="south",
                          outcome="absent")
    status, _ = await hold(http, clean.node("south"), show, "u", [a])
    assert status == 201
    deadline = time.monotonic() + 1
    while (await seat_status(http, north, show))[1][a] != "LOCKED":
        assert time.monotonic() < deadline, "north did not see the hold"
        await asyncio.sleep(0.05)
    # A marker on the region-wide channel, which every node hears: it follows the hold
    # on the replica's stream, so once west counted it, west would have had the hold.
    await publish(clean, "south", json.dumps(
        {"show": show, "version": 0, "status": "RESET", "seats": []}))
    deadline = time.monotonic() + 1
    while (now := await metric(http, west, "bookcluster_seat_changes_total",
                               source="south", outcome="absent")) == absent:
        assert time.monotonic() < deadline, "west did not hear the region channel"
        await asyncio.sleep(0.05)
    assert now == absent + 1, "west was sent the change of a show it does not serve"

    # Once west serves the show, it is sent its changes and patches its copy.
    fills = await metric(http, west, "bookcluster_seat_cache_fills_total")
    version, seats = await seat_status(http, west, show)
    assert seats[a] == "LOCKED"
    assert await followers(clean, "west", show) == 1
    status, _ = await hold(http, clean.node("south"), show, "v", [b])
    assert status == 201
    deadline = time.monotonic() + 1
    while (seen := await seat_status(http, west, show)) != (version + 1, {**seats, b: "LOCKED"}):
        assert time.monotonic() < deadline, f"west did not see the hold: {seen[0]}"
        await asyncio.sleep(0.05)
    assert await metric(http, west, "bookcluster_seat_cache_fills_total") == fills + 1

    # A live socket on it gets the next change; with neither socket nor cache entry the
    # show is no longer followed.
    async with http.ws_connect(f"{west}/shows/{show}/live") as ws:
        assert (await receive(ws))["version"] == version + 1
        await hold(http, clean.node("south"), show, "w", seats_of(catalog, show, 3)[2:])
        delta = await receive(ws)
        assert (delta["type"], delta["version"]) == ("delta", version + 2)
    assert await followers(clean, "west", show) == 1  # still cached
    await invalidate(clean, show)
    await until_followers(clean, "west", show, 0)


async def test_the_cache_reads_a_show_only_once_its_subscription_is_confirmed(
        node: InProcess, clean: Cluster, catalog: Any) -> None:
    show = shows_in(clean, catalog, "south")[-2]
    await invalidate(clean, show)
    await until_followers(clean, "north", show, 0)
    seen: list[tuple[bool, int]] = []
    replica = make_redis(clean.topology.region("north").redis_replicas["south"],
                         clean.topology.secrets)
    feed = node.listener.feeds["south"]

    async def load(show_id: int) -> SeatState:
        # At the moment of the read: the replica has confirmed the SUBSCRIBE (so every
        # later change will reach the cache), and counts this node as a follower.
        confirmed = show_id in feed.sent and show_id not in feed.unconfirmed
        seen.append((confirmed, await followers(clean, "north", show_id)))
        return await read_seat_state(replica, show_id)

    try:
        await node.seatmaps.cache.get(show, load)
        assert seen == [(True, 1)]
        assert node.sample("bookcluster_listener_shows", source="south") == 1
        # Dropped (no live socket: unsubscribed) and read again at once, its UNSUBSCRIBE
        # perhaps still on the way: subscribed again before the read.
        node.seatmaps.cache.drop_shows(lambda show_id: show_id != show)
        await node.seatmaps.cache.get(show, load)
        assert seen == [(True, 1)] * 2
        node.seatmaps.cache.drop_shows(lambda show_id: show_id != show)
        await until_followers(clean, "north", show, 0)
        assert node.sample("bookcluster_listener_shows", source="south") == 0
    finally:
        await replica.aclose()
