"""Tickets: drawn on their first download, stored in the home PostgreSQL, served from there.

A confirm used to have its region's worker draw the ticket at once (1.33 ms of
CPU, half of a draining worker's work), although most tickets are not downloaded
right away and some never. Everything a ticket shows is in the booking row and the
catalog, and its reference is an HMAC of the booking id (`signing.py`), so the
first `GET /booking/booking/{id}/ticket` draws it instead: off the event loop, at
most RENDERS_AT_ONCE at a time per node, and stores it in the `ticket` table of the
booking's home PostgreSQL (about 8.4 KB; a theatre move carries the row). Every
later download is served the stored bytes. Two first downloads at the same time
both draw, one row is stored (`STORE` keeps the first picture) and both are served
the stored bytes.

The row is written like every other write of the home region, under the theatre's
ownership fence (`bc_own`): while a move freezes the theatre, or once it moved
under this node's map, the picture is served without being stored; a later download
stores it at the theatre's home.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from bookcluster.booking import formats, ticket_image, ticket_keys
from bookcluster.booking.signing import ticket_reference
from bookcluster.catalog import Catalog, ShowInfo, TheatreInfo
from bookcluster.errors import BookingNotPending, NotFound, TheatreMoving
from bookcluster.seats.home import HomeRegion
from bookcluster.topology.errors import Moved
from bookcluster.topology.secrets import Secrets

log = logging.getLogger(__name__)

# Pictures drawn at once by one node: each is ~1.4 ms of CPU, mostly holding the GIL,
# so more threads would only queue on it while taking the event loop's turns.
RENDERS_AT_ONCE = 2

# The owner's booking with its ticket row, if any: one round trip for a download.
TICKET_QUERY = """
SELECT b.status, b.amount_paise, t.png, t.path,
       ARRAY(SELECT seat_id FROM booking_seat WHERE booking_id = b.id ORDER BY seat_id)
           AS seat_ids
FROM booking b LEFT JOIN ticket t ON t.booking_id = b.id
WHERE b.id = $1 AND b.user_id = $2
"""

# The first picture stored wins: a row without one (made before pictures were stored
# in PostgreSQL, its file gone) gets it; one with a picture keeps it and returns nothing.
STORE = ("INSERT INTO ticket (booking_id, reference, png) VALUES ($1, $2, $3) "
         "ON CONFLICT (booking_id) DO UPDATE SET png = EXCLUDED.png WHERE ticket.png IS NULL "
         "RETURNING png")
STORED = "SELECT png FROM ticket WHERE booking_id = $1"


def summary(show: ShowInfo, theatre: TheatreInfo, seat_ids: list[str],
            amount_paise: int) -> list[tuple[str, str]]:
    """What a ticket and its mail say, as (label, text): the show's start in its
    theatre's zone, amounts in rupees (`formats.py`)."""
    return [
        ("Movie", f"{show.movie_title} ({show.language}, {show.certificate})"),
        ("When", formats.local_time(show.starts_at, theatre.timezone)),
        ("Theatre", f"{theatre.name}, {theatre.city}"),
        ("Screen", show.screen_name),
        ("Seats", ", ".join(seat_ids)),
        ("Amount", formats.rupees(amount_paise)),
    ]


def ticket_lines(show: ShowInfo, theatre: TheatreInfo, seat_ids: list[str],
                 amount_paise: int, reference: str) -> list[str]:
    """The text printed beside the QR code."""
    movie, when, place, screen, seats, amount = (text for _, text in summary(
        show, theatre, seat_ids, amount_paise))
    return [movie, when, f"{place} - {screen}", f"Seats: {seats}", f"Paid: {amount}",
            f"Ref: {reference}"]


def draw(payload: str, lines: list[str]) -> bytes:
    """The ticket's PNG: the QR code of `payload` (its signed text) and `lines` of text."""
    return ticket_image.png(ticket_image.render(payload, lines))


@dataclass(frozen=True)
class IssuedTicket:
    png: bytes
    seat_ids: list[str]
    amount_paise: int


class Tickets:
    """Serves tickets, drawing and storing each on its first download."""

    def __init__(self, home: HomeRegion, catalog: Catalog, secrets: Secrets,
                 regions: tuple[str, ...] = (),
                 renders_at_once: int = RENDERS_AT_ONCE) -> None:
        self._home = home
        self._catalog = catalog
        self._secrets = secrets
        self._regions = regions
        self._keys: ticket_keys.KeyRing | None = None
        self._renders = asyncio.Semaphore(renders_at_once)

    def reference(self, booking_id: str) -> str:
        return ticket_reference(self._secrets.get("ticket_secret"), booking_id)

    @property
    def keys(self) -> ticket_keys.KeyRing:
        """Every region's signing key and the public keys that verify (read once)."""
        if self._keys is None:
            self._keys = ticket_keys.KeyRing(
                self._regions, self._secrets.get("ticket_signing_key"),
                self._secrets.optional("ticket_signing_key_previous"))
        return self._keys

    def payload(self, show: ShowInfo, booking_id: str, seat_ids: list[str]) -> str:
        """The ticket's signed QR text, with the key of the show's home region."""
        return ticket_keys.sign(self.keys.signing(show.region), booking_id, show.id,
                                show.screen_id, seat_ids, int(show.starts_at.timestamp()))

    def ticket_json(self, show: ShowInfo, booking_id: str, seat_ids: list[str]) -> dict[str, str]:
        """A confirmed booking's `ticket` field (its owner's answers only)."""
        payload = self.payload(show, booking_id, seat_ids)
        return {"payload": payload, "key_id": str(ticket_keys.key_of(payload)),
                "ticket_id": ticket_keys.ticket_id(booking_id)}

    async def png(self, show: ShowInfo, booking_id: str, owner: str) -> bytes:
        """The ticket of `owner`'s confirmed booking. NotFound for another user's or no
        booking; BookingNotPending for one not CONFIRMED."""
        return (await self.issued(show, booking_id, owner)).png

    async def issued(self, show: ShowInfo, booking_id: str, owner: str) -> IssuedTicket:
        """The ticket of `owner`'s confirmed booking with what it was drawn from (the
        confirmation mail says the same), drawn and stored if this is its first use."""
        async with self._home.connection(show.region) as conn:
            row = await conn.fetchrow(TICKET_QUERY, booking_id, owner)
        if row is None:
            raise NotFound(f"no booking {booking_id!r}", id=booking_id)
        if row["status"] != "CONFIRMED":
            raise BookingNotPending(booking_id, row["status"])
        seat_ids, amount = list(row["seat_ids"]), row["amount_paise"]
        if row["png"] is not None:
            return IssuedTicket(bytes(row["png"]), seat_ids, amount)
        if row["path"] is not None:  # drawn by a worker before pictures moved into PostgreSQL
            kept = await asyncio.to_thread(_read_if_there, Path(row["path"]))
            if kept is not None:
                return IssuedTicket(kept, seat_ids, amount)
        return IssuedTicket(await self._first(show, booking_id, seat_ids, amount), seat_ids,
                            amount)

    async def _first(self, show: ShowInfo, booking_id: str, seat_ids: list[str],
                     amount_paise: int) -> bytes:
        reference = self.reference(booking_id)
        lines = ticket_lines(show, self._catalog.theatre(show.theatre_id), seat_ids,
                             amount_paise, reference)
        signed = self.payload(show, booking_id, seat_ids)
        async with self._renders:
            image = await asyncio.to_thread(draw, signed, lines)
        try:
            async with self._home.write(show.region, show.id) as conn:
                stored = await conn.fetchval(STORE, booking_id, reference, image)
                if stored is None:  # another download stored its picture first
                    stored = await conn.fetchval(STORED, booking_id)
        except (Moved, TheatreMoving) as exc:
            log.info("ticket %s served unstored: %s", booking_id, exc)
            return image
        return image if stored is None else bytes(stored)


def _read_if_there(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None
