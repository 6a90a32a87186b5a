"""Handing a mail to the operator's SMTP relay (`settings.smtp_relay`), when one is set.

The stdlib's `smtplib` in a thread: one short conversation per mail, a few a second
at most per region, so an async client would add a dependency and save nothing. A
refusal or an unreachable relay raises: the notification job fails and the queue
runs it again with backoff (the outbox folder has the mail meanwhile).
"""

from __future__ import annotations

import asyncio
import re
import smtplib

from bookcluster.topology.model import Endpoint

BARE_LF = re.compile(rb"\r?\n")
TIMEOUT_S = 10.0  # per socket operation; the job's lease is renewed while it waits


class RelayRefused(Exception):
    """The relay answered, but did not take the mail for every recipient."""


def _send(relay: Endpoint, sender: str, recipients: list[str], message: bytes,
          timeout_s: float) -> None:
    with smtplib.SMTP(relay.host, relay.port, timeout=timeout_s) as smtp:
        smtp.ehlo_or_helo_if_needed()
        if smtp.has_extn("starttls"):  # opportunistic, as between mail servers
            smtp.starttls()
            smtp.ehlo()
        # SMTP's lines end in CRLF; smtplib sends bytes as they are, and our mails have
        # the Maildir's bare LF (a relay would read the whole mail as one long line).
        refused = smtp.sendmail(sender, recipients, BARE_LF.sub(b"\r\n", message))
    if refused:
        raise RelayRefused(f"{relay} refused {sorted(refused)}")


async def send(relay: Endpoint, sender: str, recipients: list[str], message: bytes,
               timeout_s: float = TIMEOUT_S) -> None:
    """Send `message` (RFC 5322 bytes) through `relay`; raises what smtplib raises
    (SMTPException, OSError) or RelayRefused."""
    await asyncio.to_thread(_send, relay, sender, recipients, message, timeout_s)
