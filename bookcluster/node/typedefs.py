"""Typed application keys: what a node's aiohttp app holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from bookcluster.booking.contention import EarlyRefusal
    from bookcluster.booking.holds import BookingService
    from bookcluster.booking.limits import RateLimiter
    from bookcluster.booking.queue_live import QueueHub
    from bookcluster.catalog import Catalog, ShowInfo
    from bookcluster.metrics import NodeMetrics
    from bookcluster.node.admission import WriteAdmission
    from bookcluster.node.auth import TokenVerifier
    from bookcluster.node.forward import Forwarder
    from bookcluster.node.requestlog import AccessLog
    from bookcluster.node.settings import NodeSettings
    from bookcluster.node.topology_swap import TopologySwap
    from bookcluster.seats.feed import ChangeListener
    from bookcluster.seats.live import LiveHub
    from bookcluster.seats.maps import SeatMaps
    from bookcluster.stores.connections import Connections
    from bookcluster.topology.placement import Placement

settings_key: web.AppKey[NodeSettings] = web.AppKey("settings")
connections_key: web.AppKey[Connections] = web.AppKey("connections")
catalog_key: web.AppKey[Catalog] = web.AppKey("catalog")
seatmaps_key: web.AppKey[SeatMaps] = web.AppKey("seatmaps")
bookings_key: web.AppKey[BookingService] = web.AppKey("bookings")
metrics_key: web.AppKey[NodeMetrics] = web.AppKey("metrics")
hub_key: web.AppKey[LiveHub] = web.AppKey("hub")
queue_hub_key: web.AppKey[QueueHub] = web.AppKey("queue_hub")  # live queue positions
listener_key: web.AppKey[ChangeListener] = web.AppKey("listener")
forwarder_key: web.AppKey[Forwarder] = web.AppKey("forwarder")
verifier_key: web.AppKey[TokenVerifier] = web.AppKey("verifier")
limiter_key: web.AppKey[RateLimiter] = web.AppKey("limiter")
openapi_key: web.AppKey[bytes] = web.AppKey("openapi")  # the rendered document
admission_key: web.AppKey[WriteAdmission] = web.AppKey("admission")
refusal_key: web.AppKey[EarlyRefusal] = web.AppKey("refusal")
swap_key: web.AppKey[TopologySwap] = web.AppKey("swap")  # the epoch this node routes by
access_log_key: web.AppKey[AccessLog] = web.AppKey("access_log")

# The show a request's route names, looked up once per request (with the placement it was
# routed by: a newer epoch adopted meanwhile means a new look-up).
show_key: web.RequestKey[tuple[Placement, ShowInfo]] = web.RequestKey("show")
