"""Notification mails: what a mail reader parses back, and no forged headers."""

from __future__ import annotations

import email
import email.policy

import pytest

from bookcluster.worker.jobs.notifications import mail


def parsed(data: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    assert not message.defects
    return message


def test_a_mail_parses_back_with_its_headers_and_text() -> None:
    body = "Booking b7-00000000000000ff for seats A1, A2 is confirmed.\nTicket reference: r.1\n"
    message = parsed(mail("b7-00000000000000ff:confirmed", "mira@users.bookcluster.local",
                          "b7-00000000000000ff", "Your tickets are confirmed", body))
    assert message["From"] == "tickets@bookcluster.local"
    assert message["To"].addresses[0].addr_spec == "mira@users.bookcluster.local"
    assert message["Subject"] == "Your tickets are confirmed"
    assert message["X-Booking-Id"] == "b7-00000000000000ff"
    assert message["Date"].datetime is not None
    assert "b7-00000000000000ff.confirmed" in message["Message-ID"]
    assert message.get_content_type() == "text/plain" and message.get_content() == body


def test_text_beyond_ascii_arrives_intact() -> None:
    message = parsed(mail("b1-00:refunded", "a@b.local", "b1-00", "s", "Café ₹250\n"))
    assert message.get_content() == "Café ₹250\n"


@pytest.mark.parametrize("field", ["to", "subject", "booking"])
def test_a_line_break_in_a_header_value_is_refused(field: str) -> None:
    values = {"to": "a@b.local", "subject": "s", "booking": "b1-00"}
    values[field] += "\nBcc: everyone@example.org"
    with pytest.raises(ValueError, match="line break"):
        mail("b1-00:x", values["to"], values["booking"], values["subject"], "text\n")
