"""URL table of a node. Every route is in the OpenAPI document (`openapi.py`); a test checks."""

from __future__ import annotations

from aiohttp import web

from bookcluster.node import access
from bookcluster.node.views import (
    admin,
    booking,
    catalog,
    checkin,
    docs,
    live,
    onsales,
    ops,
    pages,
    payments,
    signin,
)


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/healthz", ops.healthz)
    r.add_get("/readyz", ops.readyz)
    r.add_get("/metrics", ops.metrics)
    r.add_get("/openapi.json", docs.openapi_document)

    r.add_get("/theatres", catalog.list_theatres)
    r.add_get("/theatres/{theatre_id}/shows", catalog.theatre_shows)
    r.add_get("/shows/{show_id}", catalog.show_detail)
    r.add_get("/shows/{show_id}/seats", catalog.show_seats)
    r.add_get("/shows/{show_id}/live", live.live)

    r.add_post("/booking/seats/{show_id}/lock", booking.hold)
    r.add_post("/booking/seats/{show_id}/best", booking.best)
    r.add_post("/booking/booking/{booking_id}/pay", booking.pay)
    r.add_post("/booking/booking/{booking_id}/confirm", booking.confirm)
    r.add_post("/booking/booking/{booking_id}/cancel", booking.cancel)
    r.add_post("/booking/booking/{booking_id}/extend", booking.extend)
    r.add_post("/booking/booking/{booking_id}/refund", booking.refund)
    r.add_get("/booking/booking/{booking_id}", booking.get_booking)
    r.add_get("/booking/booking/{booking_id}/ticket", booking.ticket)
    r.add_get("/users/{user_id}/bookings", booking.user_bookings)
    r.add_get("/me/bookings", booking.my_bookings)
    r.add_post("/payments/webhook", access.signed(payments.webhook))

    r.add_get("/tickets/keys", checkin.ticket_keys)
    r.add_post("/checkin/scan", checkin.scan)
    r.add_post("/checkin/batch", checkin.batch)

    r.add_get("/onsales", onsales.list_onsales)
    r.add_post("/onsales/{onsale_id}/join", onsales.join_onsale)
    r.add_get("/onsales/{onsale_id}/position", onsales.onsale_position)
    r.add_get("/onsales/{onsale_id}/live", onsales.onsale_live)

    r.add_get("/ops/jobs", admin.job_counts)
    r.add_post("/ops/jobs/replay", admin.replay_jobs)
    r.add_get("/ops/seat-cache", admin.seat_cache)
    r.add_get("/ops/overview", admin.cluster_overview)
    r.add_post("/ops/topology", admin.adopt_topology)
    r.add_post("/ops/onsales", onsales.create_onsale)
    r.add_get("/ops/headcounts", checkin.head_counts)

    # The web pages (plain files, `bookcluster/node/web/`) and their development sign-in.
    r.add_get("/", pages.booking_page)
    r.add_get("/ops", pages.operator_page)
    r.add_get("/scan", pages.scanner_page)
    r.add_get("/static/{name}", pages.static_file)
    r.add_post("/auth/dev-sign-in", signin.dev_sign_in)
