"""Notifications to users, delivered to a local Maildir (`mail/<region>/new/`).

One message per (booking, event): the file name is the notification id, so a
repeated job rewrites the same message instead of sending a second one.
"""

from __future__ import annotations

from email.message import Message
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from bookcluster.booking.signing import ticket_reference
from bookcluster.worker.jobs.context import JobContext
from bookcluster.worker.jobs.files import deliver

SUBJECTS = {
    "confirmed": "Your tickets are confirmed",
    "refunded": "Your seats were taken - your payment is being refunded",
    "payment_failed": "Your payment failed - your seats were released",
}


def maildir(run_dir: Path, region: str) -> Path:
    return run_dir / "mail" / region


def _body(event: str, booking: dict[str, Any], data: dict[str, Any], secret: str) -> str:
    seats = ", ".join(booking["seat_ids"])
    if event == "confirmed":
        return (f"Booking {booking['booking_id']} for seats {seats} is confirmed.\n"
                f"Ticket reference: {ticket_reference(secret, booking['booking_id'])}\n")
    if event == "refunded":
        return (f"Your payment {data.get('payment_id')} arrived after your hold on seats "
                f"{seats} ended and they were sold to someone else. It is being refunded "
                f"in full.\n")
    return f"Your payment for seats {seats} failed; the seats were released.\n"


def mail(note_id: str, to: str, booking_id: str, subject: str, body: str) -> bytes:
    """The message as RFC 5322 bytes.

    The stdlib's compat32 `Message`, not `EmailMessage`: a fifth of the CPU (0.13 vs
    0.7 ms, which was most of a notification job's own work), the same headers and
    7-bit plain text. Unlike `EmailMessage` it would write a line break inside a
    header value as is (a forged header), so such a value is refused here.
    """
    headers = {"From": "tickets@bookcluster.local", "To": to, "Subject": subject,
               "Date": formatdate(), "Message-ID": make_msgid(idstring=note_id.replace(":", ".")),
               "X-Booking-Id": booking_id, "MIME-Version": "1.0"}
    message = Message()
    for name, value in headers.items():
        if "\n" in value or "\r" in value:
            raise ValueError(f"line break in the {name} header of {note_id}")
        message[name] = value
    message.set_payload(body, "us-ascii" if body.isascii() else "utf-8")
    return message.as_bytes()


async def _booking(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """What the mail needs of its booking: carried by the job where the transaction that
    wrote it had it (a sale's: user and seats never change after it), else read."""
    if "user_id" in data and "seat_ids" in data:
        show = await ctx.bookings.show_of_booking(data["booking_id"])  # the catalog's
        return {"booking_id": data["booking_id"], "user_id": data["user_id"],
                "seat_ids": list(data["seat_ids"]), "show_id": show.id,
                "region": show.region}
    return await ctx.bookings.get(data["booking_id"], owner=None)


async def send(ctx: JobContext, data: dict[str, Any]) -> str:
    event = data["event"]
    booking = await _booking(ctx, data)
    note_id = f"{booking['booking_id']}:{event}"
    message = mail(note_id, f"{booking['user_id']}@users.bookcluster.local",
                   booking["booking_id"], SUBJECTS.get(event, event),
                   _body(event, booking, data, ctx.topology.secrets.get("ticket_secret")))

    # The booking's home, which is ours unless its theatre moved since the job was queued.
    box = maildir(ctx.run_dir, booking["region"])
    (box / "cur").mkdir(parents=True, exist_ok=True)
    name = note_id.replace(":", "_") + ".eml"
    # Maildir delivery: written in tmp/, renamed into new/.
    deliver(message, box / "new" / name, box / "tmp")
    async with ctx.home.write(booking["region"], booking["show_id"]) as conn:
        await conn.execute(
            "INSERT INTO notification (id, booking_id, user_id, kind, path) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
            note_id, booking["booking_id"], booking["user_id"], event,
            str(box / "new" / name))
    return note_id
