"""Signed on-sale tokens: queue tickets and admission passes.

A token is `<base64url(JSON claims)>.<hex HMAC-SHA256>` under a key derived from the
cluster's shared `forward_secret` and the token's kind, so a ticket is never taken
for a pass. Any node verifies one offline.

- A queue ticket (`kind` "ticket") binds a user to their join: on-sale, user, seq.
  The position route computes the place from it and the region-local counters.
- An admission pass (`kind` "pass") binds a user to an on-sale's shows, a party size
  and the end of their shopping window. The home region checks it inside the hold
  path and records its single use per hold (`bc_onsale_use_pass`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

ADMISSION_HEADER = "X-Bookcluster-Admission"
TICKET_HEADER = "X-Bookcluster-Queue-Ticket"
MAX_TOKEN = 2048
TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,2000}\.[0-9a-f]{64}$")


class TokenRefused(Exception):
    """A token is malformed or its signature does not match (`forged`)."""


def _key(secret: str, kind: str) -> bytes:
    return hmac.new(secret.encode(), f"bookcluster-onsale-{kind}".encode(),
                    hashlib.sha256).digest()


def _sign(secret: str, kind: str, claims: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":"),
                                               sort_keys=True).encode()).rstrip(b"=")
    mac = hmac.new(_key(secret, kind), body, hashlib.sha256).hexdigest()
    return f"{body.decode()}.{mac}"


def _verify(secret: str, kind: str, token: str) -> dict[str, Any]:
    if len(token) > MAX_TOKEN or not TOKEN.match(token):
        raise TokenRefused("malformed")
    body, _, mac = token.partition(".")
    if not hmac.compare_digest(hmac.new(_key(secret, kind), body.encode(),
                                        hashlib.sha256).hexdigest(), mac):
        raise TokenRefused("bad signature")
    try:
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError):
        raise TokenRefused("malformed") from None
    if not isinstance(claims, dict):
        raise TokenRefused("malformed")
    return claims


@dataclass(frozen=True)
class QueueTicket:
    onsale: str
    user: str
    seq: int

    def sign(self, secret: str) -> str:
        return _sign(secret, "ticket", {"o": self.onsale, "u": self.user, "s": self.seq})

    @classmethod
    def verify(cls, secret: str, token: str) -> QueueTicket:
        c = _verify(secret, "ticket", token)
        o, u, s = c.get("o"), c.get("u"), c.get("s")
        if not isinstance(o, str) or not isinstance(u, str) or type(s) is not int:
            raise TokenRefused("malformed")
        return cls(o, u, s)


@dataclass(frozen=True)
class AdmissionPass:
    onsale: str
    user: str
    shows: tuple[int, ...]
    max_party: int
    place: int
    expires_at: float  # unix seconds: the end of the shopping window

    def sign(self, secret: str) -> str:
        return _sign(secret, "pass", {"o": self.onsale, "u": self.user,
                                      "sh": list(self.shows), "m": self.max_party,
                                      "p": self.place, "e": self.expires_at})

    @classmethod
    def verify(cls, secret: str, token: str) -> AdmissionPass:
        c = _verify(secret, "pass", token)
        o, u, sh, m, p, e = (c.get(k) for k in ("o", "u", "sh", "m", "p", "e"))
        if (not isinstance(o, str) or not isinstance(u, str) or not isinstance(sh, list)
                or not all(type(s) is int for s in sh) or type(m) is not int
                or type(p) is not int or not isinstance(e, int | float)):
            raise TokenRefused("malformed")
        return cls(o, u, tuple(sh), m, p, float(e))
