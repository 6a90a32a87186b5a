"""Ids and their formats. A booking id carries its show id, so any node routes
a booking to its home region from local data only (booking -> show -> theatre).
"""

from __future__ import annotations

import re
import secrets

from region_node.errors import MalformedId

THEATRE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
SHOW_ID = re.compile(r"^[1-9][0-9]{0,17}$")
BOOKING_ID = re.compile(r"^b([1-9][0-9]{0,17})-[0-9a-f]{16}$")
SEAT_ID = re.compile(r"^[A-Z]{1,2}[1-9][0-9]{0,2}$")
USER_ID = re.compile(r"^[A-Za-z0-9_.@:-]{1,64}$")


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
