"""Mails handed to a real SMTP relay (`worker/jobs/relay.py`), one started by the test
on loopback; no cluster needed."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import pytest

from bookcluster.topology.model import Endpoint
from bookcluster.worker.jobs import relay
from bookcluster.worker.jobs.messages import SENDER, Attachment, letter, mail
from tests.integration.mailrelay import Relay
from tests.integration.support import free_ports

ROWS = [("When", "Mon 7 Dec 2026, 10:00 am IST"), ("Amount", "₹1,23,456.00")]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


@pytest.fixture
def smtp() -> Iterator[Relay]:
    with Relay() as server:
        yield server


def message(to: str) -> bytes:
    return mail("b7-ff:confirmed", to, "b7-ff", "Your tickets are confirmed",
                letter("confirmed", ROWS, "ref.1"), [Attachment("ticket-b7-ff.png", PNG)])


async def test_the_relay_gets_the_whole_multipart_mail(smtp: Relay) -> None:
    to = "mira@users.bookcluster.local"
    await relay.send(smtp.endpoint, SENDER, [to], message(to))
    [got] = smtp.received(to)
    assert got["Message-ID"] == "<b7-ff.confirmed@bookcluster.local>"
    text = got.get_body(("plain",))
    assert text is not None and "₹1,23,456.00" in text.get_content()
    [ticket] = list(got.iter_attachments())
    assert ticket.get_content() == PNG


async def test_a_refusal_fails_the_job(smtp: Relay) -> None:
    """The job raises, so the queue runs it again later: nothing is silently lost."""
    smtp.refuse = True
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        await relay.send(smtp.endpoint, SENDER, ["a@b.local"], message("a@b.local"))
    assert smtp.received() == []


async def test_an_unreachable_relay_fails_the_job() -> None:
    with pytest.raises(OSError):
        await relay.send(Endpoint("127.0.0.1", free_ports(1)[0]), SENDER, ["a@b.local"],
                         message("a@b.local"), timeout_s=2.0)
