"""Typed application keys: what a node's aiohttp app holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from region_node.admission import WriteAdmission
    from region_node.auth import TokenVerifier
    from region_node.bookings import BookingService
    from region_node.catalog import Catalog
    from region_node.forward import Forwarder
    from region_node.limits import RateLimiter
    from region_node.listener import ChangeListener
    from region_node.live import LiveHub
    from region_node.metrics import NodeMetrics
    from region_node.refusals import EarlyRefusal
    from region_node.seatmap import SeatMaps
    from region_node.settings import NodeSettings
    from region_node.topology_swap import TopologySwap
    from router.registry import Connections

settings_key: web.AppKey[NodeSettings] = web.AppKey("settings")
connections_key: web.AppKey[Connections] = web.AppKey("connections")
catalog_key: web.AppKey[Catalog] = web.AppKey("catalog")
seatmaps_key: web.AppKey[SeatMaps] = web.AppKey("seatmaps")
bookings_key: web.AppKey[BookingService] = web.AppKey("bookings")
metrics_key: web.AppKey[NodeMetrics] = web.AppKey("metrics")
hub_key: web.AppKey[LiveHub] = web.AppKey("hub")
listener_key: web.AppKey[ChangeListener] = web.AppKey("listener")
forwarder_key: web.AppKey[Forwarder] = web.AppKey("forwarder")
verifier_key: web.AppKey[TokenVerifier] = web.AppKey("verifier")
limiter_key: web.AppKey[RateLimiter] = web.AppKey("limiter")
openapi_key: web.AppKey[bytes] = web.AppKey("openapi")  # the rendered document
admission_key: web.AppKey[WriteAdmission] = web.AppKey("admission")
refusal_key: web.AppKey[EarlyRefusal] = web.AppKey("refusal")
swap_key: web.AppKey[TopologySwap] = web.AppKey("swap")  # the epoch this node routes by
