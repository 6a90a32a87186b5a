"""Ids and their formats. A booking id carries its show id, so any node routes
a booking to its home region from local data only (booking -> show -> theatre).
"""

from __future__ import annotations

import hashlib
import re
import secrets

from bookcluster.errors import InvalidInput, MalformedId

THEATRE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
SHOW_ID = re.compile(r"^[1-9][0-9]{0,17}$")
BOOKING_ID = re.compile(r"^b([1-9][0-9]{0,17})-[0-9a-f]{16}$")
SEAT_ID = re.compile(r"^[A-Z]{1,2}[1-9][0-9]{0,2}$")
USER_ID = re.compile(r"^[A-Za-z0-9_.@:-]{1,64}$")
IDEMPOTENCY_KEY = re.compile(r"^[ -~]+$")  # printable ASCII
MAX_KEY_LENGTH = 255


def theatre_id(text: str) -> str:
    if not THEATRE_ID.match(text):
        raise MalformedId(f"malformed theatre id {text!r}", id=text)
    return text


def show_id(text: str) -> int:
    if not SHOW_ID.match(text):
        raise MalformedId(f"malformed show id {text!r}: expected a positive integer", id=text)
    return int(text)


def booking_show(booking_id: str) -> int:
    """The show a booking id belongs to."""
    match = BOOKING_ID.match(booking_id)
    if not match:
        raise MalformedId(f"malformed booking id {booking_id!r}", id=booking_id)
    return int(match.group(1))


def new_booking_id(show: int) -> str:
    return f"b{show}-{secrets.token_hex(8)}"


def keyed_booking_id(show: int, user: str, key: str) -> str:
    """The booking a hold under an Idempotency-Key makes: every attempt of that
    request names the same booking, so a retry meets its own earlier hold in
    Redis instead of colliding with it."""
    digest = hashlib.sha256(f"{user}\n{key}".encode()).hexdigest()
    return f"b{show}-{digest[:16]}"


def idempotency_key(key: str) -> str:
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"Idempotency-Key longer than {MAX_KEY_LENGTH}",
                           field="Idempotency-Key")
    if not IDEMPOTENCY_KEY.fullmatch(key):
        # Other bytes arrive as undecodable text that PostgreSQL cannot store.
        raise InvalidInput("Idempotency-Key must be printable ASCII", field="Idempotency-Key")
    return key
