"""HMAC signatures: payment webhooks (gateway -> us) and ticket references (us -> gate staff).

Webhooks carry `Bookcluster-Signature: t=<unix seconds>,v1=<hex>` where v1 is
HMAC-SHA256(secret, "<t>." + body), so a signature cannot be replayed with
another body, and a stale `t` is refused (replay window).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

SIGNATURE_HEADER = "Bookcluster-Signature"
# ASCII digits only (`str.isdigit` also takes "²" and other scripts' digits, which `int`
# refuses), and few of them: `int` of thousands of digits raises, and is slow below that.
TIMESTAMP = re.compile(r"[0-9]{1,12}")


class SignatureError(Exception):
    """The signature header is missing, malformed, stale or wrong; `code` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _mac(secret: str, payload: bytes) -> str:
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def sign_webhook(secret: str, body: bytes, at: int | None = None) -> str:
    """The header value for `body`, signed now (or at `at`)."""
    ts = int(time.time()) if at is None else at
    return f"t={ts},v1={_mac(secret, f'{ts}.'.encode() + body)}"


def verify_webhook(secret: str, header: str | None, body: bytes, window_s: float) -> None:
    if not header:
        raise SignatureError("missing_signature", f"{SIGNATURE_HEADER} header is required")
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    ts_text, given = parts.get("t", ""), parts.get("v1", "")
    if not TIMESTAMP.fullmatch(ts_text) or not given:
        raise SignatureError("malformed_signature", f"{SIGNATURE_HEADER} must be t=<unix>,v1=<hex>")
    if abs(time.time() - int(ts_text)) > window_s:
        raise SignatureError("stale_webhook",
                             f"timestamp outside the {window_s:.0f}s replay window")
    if not hmac.compare_digest(_mac(secret, f"{ts_text}.".encode() + body), given):
        raise SignatureError("bad_signature", "signature does not match the body")


def ticket_reference(secret: str, booking_id: str) -> str:
    """A booking reference gate staff can check offline: `<booking_id>.<mac>`."""
    return f"{booking_id}.{_mac('ticket:' + secret, booking_id.encode())[:20]}"


def verify_ticket_reference(secret: str, reference: str) -> str | None:
    booking_id, _, _mac_part = reference.rpartition(".")
    return booking_id if booking_id and hmac.compare_digest(
        ticket_reference(secret, booking_id), reference) else None
