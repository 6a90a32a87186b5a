"""Ticket generation: a PNG with a QR code carrying a signed booking reference.

Stored in the booking's region's PostgreSQL (`ticket.png`, about 5.5 KB), so any
node on any host serves it at `GET /booking/booking/{id}/ticket` and a theatre
move carries it. Idempotent: the image is a function of the booking, recorded once.
"""

from __future__ import annotations

from typing import Any

from bookcluster.booking.signing import ticket_reference
from bookcluster.worker.jobs.context import JobContext
from bookcluster.worker.jobs.ticket_image import png, render


async def generate(ctx: JobContext, data: dict[str, Any]) -> str:
    booking = await ctx.bookings.get(data["booking_id"], owner=None)
    if booking["status"] != "CONFIRMED":
        return "skipped: not confirmed"
    show = await ctx.catalog.show(booking["show_id"])
    theatre = ctx.catalog.theatre(show.theatre_id)
    reference = ticket_reference(ctx.topology.secrets.get("ticket_secret"), booking["booking_id"])
    lines = [
        f"{show.movie_title} ({show.certificate}, {show.language})",
        f"{theatre.name}, {theatre.city} - {show.screen_name}",
        f"{show.starts_at.astimezone().strftime('%a %d %b %Y %H:%M %Z')}",
        f"Seats: {', '.join(booking['seat_ids'])}",
        f"Paid: Rs {booking['amount_paise'] / 100:.2f}",
        f"Ref: {reference}",
    ]
    image = png(render(reference, lines))
    # The booking's home, which is ours unless its theatre moved since the job was queued.
    async with ctx.home.write(booking["region"], show.id) as conn:
        await conn.execute(
            "INSERT INTO ticket (booking_id, reference, png) VALUES ($1, $2, $3) "
            "ON CONFLICT (booking_id) DO NOTHING", booking["booking_id"], reference, image)
    return f"{len(image)} bytes"
