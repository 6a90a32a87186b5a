"""The node's aiohttp application and the one context that owns its resources."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from bookcluster.booking.confirm import ConfirmService
from bookcluster.booking.contention import EarlyRefusal
from bookcluster.booking.gateway import GatewayClient
from bookcluster.booking.holds import BookingService
from bookcluster.booking.limits import RateLimiter
from bookcluster.booking.pay import PaymentService
from bookcluster.booking.queue_live import QueueHub
from bookcluster.booking.refunds import Refunds
from bookcluster.catalog import Catalog
from bookcluster.loops import Loops
from bookcluster.metrics import NodeMetrics, secret_files, watch_secret_files
from bookcluster.node.admission import WriteAdmission
from bookcluster.node.auth import TokenVerifier
from bookcluster.node.body import MAX_BODY_BYTES
from bookcluster.node.cors import cors_middleware
from bookcluster.node.forward import Forwarder
from bookcluster.node.middlewares import error_middleware, home_middleware, metrics_middleware
from bookcluster.node.openapi import document_bytes
from bookcluster.node.requestlog import AccessLog
from bookcluster.node.routes import setup_routes
from bookcluster.node.settings import NodeSettings
from bookcluster.node.topology_swap import TopologySwap
from bookcluster.node.typedefs import (
    access_log_key,
    admission_key,
    bookings_key,
    catalog_key,
    connections_key,
    forwarder_key,
    hub_key,
    limiter_key,
    listener_key,
    metrics_key,
    openapi_key,
    queue_hub_key,
    refusal_key,
    seatmaps_key,
    settings_key,
    swap_key,
    verifier_key,
)
from bookcluster.node.views.booking import confirm_key, pay_key, refunds_key
from bookcluster.node.views.pages import files_key, load_files
from bookcluster.seats.feed import ChangeListener
from bookcluster.seats.live import LiveHub
from bookcluster.seats.maps import SeatMaps
from bookcluster.stores.connections import Connections
from bookcluster.topology.model import Topology
from bookcluster.topology.placement import Placement

log = logging.getLogger(__name__)

# Checked at start-up: a node without them must not start half-able.
NODE_SECRETS = ("redis_password", "pg_password", "forward_secret", "webhook_secret",
                "ticket_secret", "ticket_signing_key")


async def resources(app: web.Application) -> AsyncIterator[None]:
    """Opens every long-lived resource of the node and closes it on shutdown.

    Each is put on one exit stack as soon as it is open, so a start-up step that fails
    (a map the stores contradict, a client that cannot be made) closes whatever the
    steps before it opened, newest first, as shutdown does: no listener, socket hub,
    task or client outlives a node that did not start."""
    settings = app[settings_key]
    topology = settings.topology
    metrics = app[metrics_key]
    async with contextlib.AsyncExitStack() as stack:
        connections = await stack.enter_async_context(
            Connections(topology, settings.region, settings.routes))
        app[connections_key] = connections
        metrics.watch_pools(connections)
        catalog = Catalog(connections, Placement(topology))
        await catalog.load()
        app[catalog_key] = catalog
        swap = app[swap_key] = TopologySwap(connections, catalog)
        await swap.start()
        seatmaps = SeatMaps(connections, catalog, metrics)
        stack.push_async_callback(seatmaps.close)
        app[seatmaps_key] = seatmaps

        async def snapshot(show_id: int) -> dict[str, Any]:
            return await seatmaps.seat_map(await catalog.show(show_id))

        def live_failed(what: str, why: str) -> None:
            metrics.live_failures.labels(settings.region, what, why).inc()

        hub = LiveHub(snapshot, live_failed)
        stack.push_async_callback(hub.close)
        app[hub_key] = hub
        listener = ChangeListener(connections, catalog, seatmaps, hub, metrics)
        stack.push_async_callback(listener.close)  # closed before the hub: no delta after
        listener.start()
        app[listener_key] = listener
        bookings = BookingService(connections, catalog, metrics)
        stack.push_async_callback(bookings.close)  # its hold batchers, before the pools
        app[bookings_key] = bookings
        queue_hub = QueueHub(bookings.onsales.published, bookings.onsales.answer, live_failed)
        stack.push_async_callback(queue_hub.close)
        app[queue_hub_key] = queue_hub
        app[refunds_key] = Refunds(bookings)
        if topology.payments:
            gateway = GatewayClient(topology)
            stack.push_async_callback(gateway.close)
            await gateway.open()
            app[confirm_key] = ConfirmService(bookings, gateway)
            app[pay_key] = PaymentService(bookings, gateway)
        limiter = app[limiter_key] = RateLimiter(connections, topology.limits, metrics)
        app[refusal_key] = EarlyRefusal(connections, seatmaps, limiter, metrics)
        forwarder = Forwarder(swap.topology, settings.region, settings.routes)
        stack.push_async_callback(forwarder.close)
        await forwarder.open()
        app[forwarder_key] = forwarder

        def rehome(new: Topology, moved: dict[int, str]) -> None:
            """A new epoch: moved shows are followed and read at their new home."""
            forwarder.topology = new
            listener.adopt(moved)
            seatmaps.cache.drop_shows(lambda show_id: show_id not in moved)
            for show_id in moved:
                hub.resync(show_id)

        swap.hooks.append(rehome)
        loops = Loops(settings.region, metrics.registry)
        loops.start(swap.loop(settings.topology_poll_s))
        loops.start(bookings.onsales.guard_loop(settings.region))
        stack.push_async_callback(loops.close)
        log.info("node %s ready: %d theatres in catalog", settings.name, len(catalog.theatres))
        yield
    log.info("node %s stopped", settings.name)


async def freeze_startup_objects(_: web.Application) -> None:
    """What start-up made (the catalog, routes, the OpenAPI document: ~90,000 objects)
    lives as long as the node: out of the cyclic collector's way, so its full passes
    walk only what requests leave behind (they cost a profiled 1-2 % of a busy node)."""
    gc.freeze()


def create_app(settings: NodeSettings) -> web.Application:
    # client_max_size: aiohttp counts while reading, so a chunked body (no Content-Length)
    # is cut off at the limit too (413) instead of being buffered whole.
    # CORS outside the error middleware: the cluster's pages read refusals too.
    app = web.Application(middlewares=[metrics_middleware, cors_middleware, home_middleware,
                                       error_middleware],
                          client_max_size=MAX_BODY_BYTES)
    app[settings_key] = settings
    settings.topology.secrets.require(*NODE_SECRETS)
    app[verifier_key] = TokenVerifier(settings.topology)
    app[metrics_key] = NodeMetrics(settings.region)
    auth = settings.topology.auth  # HS256 with no `auth.secret_file`: the jwt_secret secret
    jwt = ("jwt_secret",) if auth.algorithm == "HS256" and auth.secret_file is None else ()
    watch_secret_files(app[metrics_key].registry, settings.region,
                       secret_files(settings.topology, NODE_SECRETS + jwt))
    app[admission_key] = WriteAdmission(
        app[metrics_key], settings.write_slots, settings.write_queue,
        per_user=settings.topology.limits.user_writes_at_once)
    app[access_log_key] = AccessLog(settings.access_log or
                                    settings.topology.settings.access_log)
    app[openapi_key] = document_bytes(settings.topology)
    app[files_key] = load_files()
    app.cleanup_ctx.append(resources)
    app.on_startup.append(freeze_startup_objects)  # runs after `resources` opened
    setup_routes(app)
    return app
