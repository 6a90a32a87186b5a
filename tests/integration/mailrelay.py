"""A real SMTP relay on loopback for the tests (aiosmtpd, in a thread of its own): the
session cluster's workers send every mail through it (`settings.smtp_relay`)."""

from __future__ import annotations

import email
import email.message
import email.policy
import threading
from typing import Any

from aiosmtpd.controller import Controller

from bookcluster.topology.model import Endpoint
from tests.integration.support import free_ports


class Relay:
    """Keeps every mail it accepts; `refuse` makes it refuse recipients (550)."""

    def __init__(self) -> None:
        self.endpoint = Endpoint("127.0.0.1", free_ports(1)[0])
        self.refuse = False
        self._lock = threading.Lock()
        self._mails: list[tuple[str, list[str], bytes]] = []
        self._controller = Controller(self, hostname=self.endpoint.host,
                                      port=self.endpoint.port)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if self.refuse:
            return "550 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self._mails.append((envelope.mail_from, list(envelope.rcpt_tos),
                                bytes(envelope.original_content)))
        return "250 Message accepted for delivery"

    def received(self, to: str | None = None) -> list[email.message.EmailMessage]:
        """The mails accepted so far (for recipient `to`), parsed."""
        with self._lock:
            mails = list(self._mails)
        parsed = []
        for _, recipients, data in mails:
            if to is None or to in recipients:
                message = email.message_from_bytes(data, policy=email.policy.default)
                assert isinstance(message, email.message.EmailMessage)
                parsed.append(message)
        return parsed

    def __enter__(self) -> Relay:
        self._controller.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._controller.stop()
