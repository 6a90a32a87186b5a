"""One Pub/Sub subscription per source region, on this region's local replica.

Masters publish every seat change; replication carries the publish to the
replicas, so a node hears every region's changes without leaving its own
region. Each message patches the seat cache and fans out to live sockets.
A lost subscription drops that region's cached shows (messages may have been
missed) and tells live sockets to re-sync.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from region_node import keys
from region_node.catalog import Catalog
from region_node.live import LiveHub
from region_node.metrics import NodeMetrics
from region_node.seatmap import SeatMaps
from router.registry import Connections

log = logging.getLogger(__name__)

RECONNECT_DELAY_S = 0.5


class ChangeListener:
    def __init__(self, connections: Connections, catalog: Catalog, seatmaps: SeatMaps,
                 hub: LiveHub, metrics: NodeMetrics) -> None:
        self._connections = connections
        self._catalog = catalog
        self._seatmaps = seatmaps
        self._hub = hub
        self._metrics = metrics
        self._tasks: list[asyncio.Task[None]] = []
        self.subscribed: dict[str, asyncio.Event] = {}

    @property
    def region(self) -> str:
        return self._connections.local_region

    def start(self) -> None:
        for source in self._connections.topology.regions:
            self.subscribed[source] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._run(source), name=f"listen-{source}"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _run(self, source: str) -> None:
        endpoint = self._connections.topology.region(self.region).redis_replicas[source]
        while True:
            client = aioredis.Redis(host=endpoint.host, port=endpoint.port,
                                    password=self._connections.topology.secrets.redis_password,
                                    decode_responses=True, socket_connect_timeout=1.0,
                                    socket_timeout=None, retry=Retry(NoBackoff(), 0))
            try:
                await self._listen(client, source)
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
                log.warning("subscription to %s changes lost: %s", source, exc)
            finally:
                self.subscribed[source].clear()
                await client.aclose()
            await asyncio.sleep(RECONNECT_DELAY_S)

    async def _listen(self, client: aioredis.Redis, source: str) -> None:
        async with client.pubsub() as pubsub:
            await pubsub.subscribe(keys.SEAT_CHANGES_CHANNEL)
            async for message in pubsub.listen():
                if message["type"] == "subscribe":
                    self._resubscribed(source)
                elif message["type"] == "message":
                    await self.on_message(json.loads(message["data"]), source)

    def _resubscribed(self, source: str) -> None:
        """Fresh subscription: anything cached from `source` may have missed changes."""
        first = self._metrics.subscription_resets.labels(self.region, source)
        first.inc()
        dropped = self._seatmaps.cache.drop_shows(
            lambda show_id: self._catalog.region_of_show(show_id) != source)
        for show_id in dropped:
            self._hub.resync(show_id)
        self.subscribed[source].set()
        log.info("subscribed to %s changes; dropped %d cached shows", source, len(dropped))

    async def on_message(self, message: dict[str, Any], source: str) -> None:
        if "ts" in message:
            delay = max(0.0, time.time() - int(message["ts"]) / 1000)
            self._metrics.change_delay.labels(source, self.region).observe(delay)
        outcome = self._seatmaps.cache.apply(message)
        self._metrics.changes.labels(self.region, source, outcome).inc()
        if message.get("status") == "RESET":
            self._hub.resync(int(message["show"]))
        else:
            await self._hub.publish(message)
