"""Signed tickets: Ed25519 over a compact payload, verifiable offline with public keys alone.

A ticket's QR holds `BC1.<body>.<signature>`: `body` is the base64url of a compact
JSON object (booking `b`, show `s`, screen `c`, seats `t`, start `at` in unix seconds,
ticket id `id`, key id `k`) and `signature` the base64url Ed25519 signature of the
text before the second dot. Ed25519 signatures are deterministic, so a booking's
payload is the same text every time it is made (answer, image, e-mail).

Keys: each region signs with its own key, derived from the cluster's
`ticket_signing_key` secret and the region's name (a secret like the others, 0600,
never shipped). A key id is `<region>-<10 hex of the public key's SHA-256>`, so a new
secret gives new ids; `ticket_signing_key_previous`, when set, keeps the keys it gives
listed (and verifying) after a rotation. `GET /tickets/keys` publishes the public keys:
a scanner that holds them verifies any ticket, and cannot mint one.

`verify` is pure (no I/O): a gate runs it offline; the home region runs it again
before it records an entry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

PREFIX = "BC1"
MAX_PAYLOAD = 1500  # characters: what a QR of ours holds comfortably
ALGORITHM = "Ed25519"


class TicketInvalid(Exception):
    """A payload that is not a ticket we signed; `code` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class TicketClaims:
    booking_id: str
    show_id: int
    screen_id: str
    seat_ids: tuple[str, ...]
    starts_at: int  # unix seconds
    ticket_id: str
    key_id: str

    def as_json(self) -> dict[str, Any]:
        return {"booking_id": self.booking_id, "show_id": self.show_id,
                "screen_id": self.screen_id, "seat_ids": list(self.seat_ids),
                "starts_at": self.starts_at, "ticket_id": self.ticket_id,
                "key_id": self.key_id}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or not text.isascii():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def ticket_id(booking_id: str) -> str:
    """The booking's ticket id: stable, so a payload is the same text every time."""
    return hashlib.sha256(f"ticket-id:{booking_id}".encode()).hexdigest()[:16]


def _seed(secret: str, region: str) -> bytes:
    return hashlib.sha256(f"bookcluster ticket ed25519\0{region}\0{secret}".encode()).digest()


def key_id(region: str, public: Ed25519PublicKey) -> str:
    raw = public.public_bytes_raw()
    return f"{region}-{hashlib.sha256(raw).hexdigest()[:10]}"


@dataclass(frozen=True)
class SigningKey:
    region: str
    kid: str
    private: Ed25519PrivateKey

    @classmethod
    def derive(cls, secret: str, region: str) -> SigningKey:
        private = Ed25519PrivateKey.from_private_bytes(_seed(secret, region))
        return cls(region, key_id(region, private.public_key()), private)

    def public_raw(self) -> bytes:
        return self.private.public_key().public_bytes_raw()


def sign(key: SigningKey, booking_id: str, show_id: int, screen_id: str,
         seat_ids: Iterable[str], starts_at: int) -> str:
    body = {"b": booking_id, "s": show_id, "c": screen_id, "t": sorted(seat_ids),
            "at": int(starts_at), "id": ticket_id(booking_id), "k": key.kid}
    head = f"{PREFIX}.{_b64(json.dumps(body, separators=(',', ':'), sort_keys=True).encode())}"
    return f"{head}.{_b64(key.private.sign(head.encode()))}"


def key_of(payload: str) -> str | None:
    """The key id a payload names, unverified (None if it is not shaped like a ticket)."""
    try:
        return str(_body(payload)[1]["k"])
    except (TicketInvalid, KeyError):
        return None


def _body(payload: str) -> tuple[str, dict[str, Any], bytes]:
    if len(payload) > MAX_PAYLOAD:
        raise TicketInvalid("malformed_ticket", "the payload is too long to be a ticket")
    parts = payload.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise TicketInvalid("malformed_ticket", f"a ticket is {PREFIX}.<body>.<signature>")
    try:
        body = json.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise TicketInvalid("malformed_ticket", "the payload is not base64url JSON") from None
    if not isinstance(body, dict):
        raise TicketInvalid("malformed_ticket", "the payload's body is not an object")
    return f"{parts[0]}.{parts[1]}", body, signature


def unverified_show(payload: str) -> int:
    """The show a payload names, before its signature is checked (to route it home)."""
    _, body, _ = _body(payload)
    show = body.get("s")
    if not isinstance(show, int) or isinstance(show, bool):
        raise TicketInvalid("malformed_ticket", "the payload names no show")
    return show


def verify(payload: str, keys: Mapping[str, bytes]) -> TicketClaims:
    """The claims of a ticket signed by one of `keys` (key id -> raw Ed25519 public key),
    or TicketInvalid: malformed_ticket, unknown_key, bad_signature."""
    head, body, signature = _body(payload)
    kid = body.get("k")
    raw = keys.get(kid) if isinstance(kid, str) else None
    if raw is None or not isinstance(kid, str):
        raise TicketInvalid("unknown_key", f"no published key has the id {kid!r}")
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, head.encode())
    except (InvalidSignature, ValueError):
        raise TicketInvalid("bad_signature", "the signature does not match the ticket") from None
    try:
        claims = TicketClaims(
            booking_id=_text(body["b"]), show_id=_int(body["s"]), screen_id=_text(body["c"]),
            seat_ids=tuple(_text(s) for s in body["t"]), starts_at=_int(body["at"]),
            ticket_id=_text(body["id"]), key_id=kid)
    except (KeyError, TypeError, ValueError):
        # Signed by us, so never expected; refused all the same.
        raise TicketInvalid("malformed_ticket", "the ticket lacks a field") from None
    if not claims.seat_ids:
        raise TicketInvalid("malformed_ticket", "the ticket has no seats")
    return claims


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected text")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("expected an integer")
    return value


class KeyRing:
    """The signing keys of every region (current secret) and the public keys that still
    verify (current and previous secret)."""

    def __init__(self, regions: Iterable[str], secret: str,
                 previous: str | None = None) -> None:
        names = sorted(regions)
        self._signing = {r: SigningKey.derive(secret, r) for r in names}
        older = [SigningKey.derive(previous, r) for r in names] if previous else []
        self._public: dict[str, tuple[str, bytes, bool]] = {}
        for key in [*self._signing.values(), *older]:
            self._public.setdefault(key.kid, (key.region, key.public_raw(),
                                              key.kid == self._signing[key.region].kid))

    def signing(self, region: str) -> SigningKey:
        return self._signing[region]

    def verifying(self) -> dict[str, bytes]:
        return {kid: raw for kid, (_, raw, _) in self._public.items()}

    def published(self) -> dict[str, Any]:
        """`GET /tickets/keys`: every key that verifies, by id."""
        return {"algorithm": ALGORITHM, "format": f"{PREFIX}.<body>.<signature>",
                "keys": [{"key_id": kid, "region": region, "public_key": _b64(raw),
                          "current": current}
                         for kid, (region, raw, current) in self._public.items()]}


def public_keys(published: Mapping[str, Any]) -> dict[str, bytes]:
    """The key table `verify` takes, from a `GET /tickets/keys` answer (a gate's copy)."""
    return {str(k["key_id"]): _unb64(str(k["public_key"])) for k in published["keys"]}
