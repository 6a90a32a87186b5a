"""Notification mails: what a mail reader parses back, and no forged headers."""

from __future__ import annotations

import email
import email.policy
import html

import pytest

from bookcluster.worker.jobs.messages import Attachment, letter, mail


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


ROWS = [("Movie", "Chai & Chaos (Hindi, U)"), ("When", "Mon 7 Dec 2026, 10:00 am IST"),
        ("Theatre", "PVR <Saket>, Delhi"), ("Screen", "Audi 2"), ("Seats", "A1, A2"),
        ("Amount", "₹1,23,456.00")]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def test_a_confirmation_is_text_and_html_with_the_ticket_attached() -> None:
    body = letter("confirmed", ROWS, "ref.123")
    message = parsed(mail("b7-ff:confirmed", "mira@users.bookcluster.local", "b7-ff",
                          "Your tickets are confirmed", body,
                          [Attachment("ticket-b7-ff.png", PNG)]))
    assert message.get_content_type() == "multipart/mixed"
    alternative, ticket = message.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    text, page = alternative.iter_parts()
    assert text.get_content_type() == "text/plain" and page.get_content_type() == "text/html"
    for label, value in ROWS:
        assert f"{label}:" in text.get_content() and value in text.get_content()
        assert html.escape(value) in page.get_content()
    assert "ref.123" in text.get_content() and "ref.123" in page.get_content()
    assert "<Saket>" not in page.get_content()  # catalog text is escaped, never markup
    assert ticket.get_content_type() == "image/png" and ticket.is_attachment()
    assert ticket.get_filename() == "ticket-b7-ff.png"
    assert ticket.get_content() == PNG
    assert [name for name, _ in message.items()].count("MIME-Version") == 1
    body_attachment = message.get_body(("plain",))
    assert body_attachment is not None and "₹1,23,456.00" in body_attachment.get_content()


def test_the_message_id_is_the_same_on_every_run_of_the_job() -> None:
    first, again = (parsed(mail("b7-ff:confirmed", "a@b.local", "b7-ff", "s", "t\n"))
                    for _ in range(2))
    assert first["Message-ID"] == again["Message-ID"] == "<b7-ff.confirmed@bookcluster.local>"


@pytest.mark.parametrize("event", ["refunded", "payment_failed"])
def test_other_mails_name_the_show_too(event: str) -> None:
    body = letter(event, ROWS, "ref.123", payment_id="pay_1")
    message = parsed(mail(f"b7-ff:{event}", "a@b.local", "b7-ff", "s", body))
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    assert text is not None
    assert "Mon 7 Dec 2026, 10:00 am IST" in text.get_content()
    assert ("pay_1" in text.get_content()) == (event == "refunded")
    assert "ref.123" not in text.get_content()  # no ticket to show for these
