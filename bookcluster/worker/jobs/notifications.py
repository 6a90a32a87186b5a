"""Notifications to users, delivered to a local Maildir (`mail/<region>/new/`) and,
when `settings.smtp_relay` is set, through that SMTP relay.

One message per (booking, event): the file name is the notification id, so a
repeated job rewrites the same message instead of sending a second one, and a job
that recorded its notification row does not hand the mail to the relay again (one
that died between the relay's answer and the row sends it twice, with the same
Message-ID). A confirmation carries its ticket's PNG: drawn and stored now if no
download drew it yet (`booking/tickets.py`), so the mail and later downloads agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bookcluster.booking.signing import ticket_reference
from bookcluster.booking.tickets import summary
from bookcluster.worker.jobs import relay
from bookcluster.worker.jobs.context import JobContext
from bookcluster.worker.jobs.files import deliver
from bookcluster.worker.jobs.messages import SENDER, SUBJECTS, Attachment, letter, mail


def maildir(run_dir: Path, region: str) -> Path:
    return run_dir / "mail" / region


async def _booking(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """What the mail needs of its booking: carried by the job where the transaction that
    wrote it had it (a sale's: user and seats never change after it), else read."""
    if "user_id" in data and "seat_ids" in data:
        show = await ctx.bookings.show_of_booking(data["booking_id"])  # the catalog's
        return {"booking_id": data["booking_id"], "user_id": data["user_id"],
                "seat_ids": list(data["seat_ids"]), "show_id": show.id,
                "region": show.region}
    return await ctx.bookings.get(data["booking_id"], owner=None)


async def compose(ctx: JobContext, event: str, booking: dict[str, Any],
                  data: dict[str, Any]) -> bytes:
    """The mail of `event` about `booking`, as bytes."""
    booking_id = booking["booking_id"]
    show = await ctx.bookings.show_of_booking(booking_id)
    theatre = ctx.catalog.theatre(show.theatre_id)
    attachments = []
    if event == "confirmed":
        ticket = await ctx.bookings.tickets.issued(show, booking_id, booking["user_id"])
        amount, seat_ids = ticket.amount_paise, ticket.seat_ids
        attachments.append(Attachment(f"ticket-{booking_id}.png", ticket.png))
    else:
        amount, seat_ids = booking["amount_paise"], booking["seat_ids"]
    reference = ticket_reference(ctx.topology.secrets.get("ticket_secret"), booking_id)
    body = letter(event, summary(show, theatre, seat_ids, amount), reference,
                  data.get("payment_id"))
    return mail(f"{booking_id}:{event}", recipient(booking["user_id"]), booking_id,
                SUBJECTS.get(event, event), body, attachments)


def recipient(user_id: str) -> str:
    return f"{user_id}@users.bookcluster.local"


async def send(ctx: JobContext, data: dict[str, Any]) -> str:
    event = data["event"]
    booking = await _booking(ctx, data)
    note_id = f"{booking['booking_id']}:{event}"
    message = await compose(ctx, event, booking, data)

    # The booking's home, which is ours unless its theatre moved since the job was queued.
    box = maildir(ctx.run_dir, booking["region"])
    (box / "cur").mkdir(parents=True, exist_ok=True)
    name = note_id.replace(":", "_") + ".eml"
    # Maildir delivery: written in tmp/, renamed into new/.
    deliver(message, box / "new" / name, box / "tmp")
    smtp = ctx.topology.settings.smtp_relay
    if smtp is not None:
        async with ctx.home.connection(booking["region"]) as conn:
            sent = await conn.fetchval("SELECT true FROM notification WHERE id = $1", note_id)
        if not sent:
            await relay.send(smtp, SENDER, [recipient(booking["user_id"])], message)
    async with ctx.home.write(booking["region"], booking["show_id"]) as conn:
        await conn.execute(
            "INSERT INTO notification (id, booking_id, user_id, kind, path) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
            note_id, booking["booking_id"], booking["user_id"], event,
            str(box / "new" / name))
    return note_id
