"""The mails users get, as MIME bytes: a plain text and an HTML alternative saying the
same (the show in its theatre's time, amounts in rupees: `booking/formats.py`), and
for a confirmation the ticket's PNG attached.

Built with the stdlib's compat32 classes, not `EmailMessage`: a fifth of the CPU for
the headers and text (0.13 vs 0.7 ms, once most of a notification job's own work).
Unlike `EmailMessage` they would write a line break inside a header value as is (a
forged header), so such a value is refused here.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from email.mime.base import MIMEBase
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate

SENDER = "tickets@bookcluster.local"

SUBJECTS = {
    "confirmed": "Your tickets are confirmed",
    "refunded": "Your seats were taken - your payment is being refunded",
    "payment_failed": "Your payment failed - your seats were released",
}


@dataclass(frozen=True)
class Attachment:
    filename: str
    png: bytes


@dataclass(frozen=True)
class Letter:
    """What a mail says: opening sentences, (label, text) rows, closing sentences."""

    opening: str
    rows: Sequence[tuple[str, str]] = ()
    closing: Sequence[str] = ()

    def text(self) -> str:
        width = max((len(label) for label, _ in self.rows), default=0) + 2
        lines = [self.opening, ""]
        lines += [f"{label + ':':<{width}}{value}" for label, value in self.rows]
        if self.rows:
            lines.append("")
        lines += self.closing
        return "\n".join(lines).rstrip("\n") + "\n"

    def html(self) -> str:
        e = html.escape
        rows = "".join(f'<tr><th align="left" style="padding:2px 12px 2px 0">{e(label)}</th>'
                       f"<td>{e(value)}</td></tr>" for label, value in self.rows)
        closing = "".join(f"<p>{e(line)}</p>" for line in self.closing)
        table = f'<table cellspacing="0">{rows}</table>' if rows else ""
        return (f'<!DOCTYPE html><html><body style="font-family:sans-serif">'
                f"<p>{e(self.opening)}</p>{table}{closing}</body></html>\n")


def letter(event: str, rows: Sequence[tuple[str, str]], reference: str,
           payment_id: str | None = None) -> Letter:
    """The mail of `event` about a booking whose ticket says `rows` (`tickets.summary`)."""
    if event == "confirmed":
        return Letter("Your tickets are confirmed. See you at the show!", rows,
                      [f"Ticket reference: {reference}",
                       "Your ticket is attached: show its QR code at the entrance."])
    if event == "refunded":
        return Letter(f"Your payment {payment_id} arrived after your hold on these seats "
                      "ended and they were sold to someone else. It is being refunded in "
                      "full.", rows)
    return Letter("Your payment failed; the seats were released.", rows)


def mail(note_id: str, to: str, booking_id: str, subject: str, body: str | Letter,
         attachments: Sequence[Attachment] = ()) -> bytes:
    """The message as RFC 5322 bytes: plain text for a str `body`; for a Letter,
    multipart/alternative (text, HTML), inside multipart/mixed with `attachments`.
    Its Message-ID is the same on every run of the job (a relay or reader can drop a
    repeat)."""
    headers = {"From": SENDER, "To": to, "Subject": subject, "Date": formatdate(),
               "Message-ID": f"<{note_id.replace(':', '.')}@bookcluster.local>",
               "X-Booking-Id": booking_id}
    for name, value in headers.items():
        if "\n" in value or "\r" in value:
            raise ValueError(f"line break in the {name} header of {note_id}")
    message: MIMEBase
    if isinstance(body, str):
        message = _text(body, "plain")
    else:
        message = MIMEMultipart("alternative", None,
                                [_text(body.text(), "plain"), _text(body.html(), "html")])
    if attachments:
        message = MIMEMultipart("mixed", None, [message, *map(_png, attachments)])
    for part in message.walk():
        if part is not message:
            del part["MIME-Version"]  # the top level's says it for the whole message
    for name, value in headers.items():
        message[name] = value
    return message.as_bytes()


def _text(text: str, subtype: str) -> MIMEText:
    return MIMEText(text, subtype, "us-ascii" if text.isascii() else "utf-8")


def _png(attachment: Attachment) -> MIMEImage:
    part = MIMEImage(attachment.png, "png")
    part.add_header("Content-Disposition", "attachment", filename=attachment.filename)
    return part
