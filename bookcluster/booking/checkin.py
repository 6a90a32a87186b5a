"""Check-in at the door: a ticket goes in once, decided at its show's home region.

A gate (a token with the `scanner` role, for the theatres its token names) posts the
QR's text with a nonce of its own per scan. The home node verifies the signature
(`ticket_keys.verify`; an HMAC reference of a ticket drawn before signed ones still
goes, until its show's check-in window closes), checks the show (the gate's own, if
it names one; within the check-in window), and `bc_checkin` decides and records the
scan under the booking's row lock, within the theatre's ownership fence: a retry with
the same nonce gets the first answer, a second entry is refused with when and where
the first was, and two gates at once admit it once. A gate that was offline admitted
by signature alone and uploads its scans later (`batch`): they are applied in order,
and a ticket that went in twice is recorded and reported (`entered_twice`), not hidden.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from bookcluster.booking import ids, ledger, ticket_keys
from bookcluster.booking.signing import verify_ticket_reference
from bookcluster.booking.tickets import Tickets
from bookcluster.catalog import Catalog, ShowInfo
from bookcluster.errors import (
    CheckinRefused,
    Forbidden,
    InvalidInput,
    NotFound,
    TicketNotValid,
)
from bookcluster.metrics import NodeMetrics
from bookcluster.seats.home import HomeRegion
from bookcluster.topology.model import Settings
from bookcluster.topology.secrets import Secrets

NONCE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
GATE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_BATCH = 500
# Outcomes that answer 200: the bearer goes through (an offline double entry went
# through already, and is reported).
PASSED = frozenset({"admitted", "exited", "entered_twice"})

Direction = Literal["in", "out"]


class ScanRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One scan at a gate."""

    payload: Annotated[str, Meta(min_length=1, max_length=ticket_keys.MAX_PAYLOAD,
                                 description="the QR's text")]
    nonce: Annotated[str, Meta(pattern=NONCE.pattern,
                               description="the gate's, new for every scan; a retry "
                                           "sends the same one")]
    gate: Annotated[str, Meta(pattern=GATE.pattern)]
    direction: Direction = "in"
    show_id: Annotated[int | None, Meta(description="the show this gate admits to; a "
                                                    "ticket of another is refused")] = None
    scanned_at: Annotated[str | None, Meta(
        description="when an offline gate scanned it (ISO 8601); batches only")] = None


class BatchRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Scans an offline gate made, in the order it made them."""

    scans: Annotated[list[ScanRequest], Meta(min_length=1, max_length=MAX_BATCH)]


def parse_scan(body: Any) -> ScanRequest:
    scan: ScanRequest = _convert(body, ScanRequest, "payload")
    return scan


def parse_batch(body: Any) -> BatchRequest:
    batch: BatchRequest = _convert(body, BatchRequest, "scans")
    for i, scan in enumerate(batch.scans):
        if scan.scanned_at is None:
            raise InvalidInput(f"scans[{i}] needs scanned_at", field="scanned_at", index=i)
        scanned_at(scan)  # well-formed
    return batch


def _convert(body: Any, model: type[Any], first: str) -> Any:
    if not isinstance(body, dict):
        raise InvalidInput(f"body must be a JSON object with {first}", field=first)
    try:
        return msgspec.convert(body, model)
    except msgspec.ValidationError as exc:
        found = re.search(r"\$\.([a-z_]+)", str(exc))
        raise InvalidInput(f"invalid scan ({exc})",
                           field=found.group(1) if found else "body") from None


def scanned_at(scan: ScanRequest) -> datetime | None:
    if scan.scanned_at is None:
        return None
    try:
        at = datetime.fromisoformat(scan.scanned_at)
    except ValueError:
        raise InvalidInput("scanned_at must be an ISO 8601 time", field="scanned_at") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def show_of_payload(payload: str, secrets: Secrets) -> int:
    """The show a scan is for, before anything is verified (to route it home)."""
    if payload.startswith(f"{ticket_keys.PREFIX}."):
        try:
            return ticket_keys.unverified_show(payload)
        except ticket_keys.TicketInvalid as exc:
            raise TicketNotValid(exc.code, str(exc)) from None
    booking_id = verify_ticket_reference(secrets.get("ticket_secret"), payload)
    if booking_id is None or not ids.BOOKING_ID.match(booking_id):
        raise TicketNotValid("malformed_ticket",
                             "neither a signed ticket nor a ticket reference of ours")
    return ids.booking_show(booking_id)


def in_window(settings: Settings, starts_at: datetime, at: datetime) -> bool:
    """Whether a show's tickets may be scanned at `at`."""
    offset = (at - starts_at).total_seconds()
    return -settings.checkin_opens_before_s <= offset <= settings.checkin_closes_after_s


@dataclass(frozen=True)
class Ticket:
    """A genuine ticket: its booking, show and (for a signed one) seats."""

    booking_id: str
    show_id: int
    seat_ids: tuple[str, ...] | None  # None: an HMAC reference, which names no seats
    signed: bool


def genuine(payload: str, keys: dict[str, bytes], secrets: Secrets) -> Ticket:
    if payload.startswith(f"{ticket_keys.PREFIX}."):
        try:
            claims = ticket_keys.verify(payload, keys)
        except ticket_keys.TicketInvalid as exc:
            raise TicketNotValid(exc.code, str(exc)) from None
        if ids.booking_show(claims.booking_id) != claims.show_id:
            raise TicketNotValid("malformed_ticket", "the ticket's booking is of another show")
        return Ticket(claims.booking_id, claims.show_id, claims.seat_ids, True)
    booking_id = verify_ticket_reference(secrets.get("ticket_secret"), payload)
    if booking_id is None or not ids.BOOKING_ID.match(booking_id):
        raise TicketNotValid("bad_signature", "the ticket reference does not verify")
    return Ticket(booking_id, ids.booking_show(booking_id), None, False)


class CheckIn:
    """Scans at the home region of their shows."""

    def __init__(self, home: HomeRegion, catalog: Catalog, tickets: Tickets,
                 secrets: Secrets, settings: Settings, metrics: NodeMetrics) -> None:
        self._home = home
        self._metrics = metrics
        self._catalog = catalog
        self._tickets = tickets
        self._secrets = secrets
        self._settings = settings

    async def show_of(self, payload: str) -> ShowInfo:
        try:
            return await self._catalog.show(show_of_payload(payload, self._secrets))
        except NotFound:
            raise TicketNotValid("malformed_ticket", "the ticket names no show of ours") from None

    async def scan(self, scan: ScanRequest, scanner: str,
                   theatres: frozenset[str]) -> dict[str, Any]:
        """One online scan: its answer (200), or CheckinRefused / TicketNotValid."""
        answer = await self._apply(scan, scanner, theatres, offline=False)
        if answer["outcome"] not in PASSED:
            raise CheckinRefused(answer["outcome"], **{k: v for k, v in answer.items()
                                                       if k != "outcome"})
        return answer

    async def batch(self, batch: BatchRequest, scanner: str, theatres: frozenset[str],
                    region: str) -> dict[str, Any]:
        """An offline gate's scans, in order: every answer, and the double entries. The
        batch was routed to `region`, its first scan's home; a scan of a show at home
        elsewhere is answered `other_region` (a gate's theatres share one home)."""
        results: list[dict[str, Any]] = []
        for scan in batch.scans:
            try:
                if (await self.show_of(scan.payload)).region != region:
                    results.append({"nonce": scan.nonce, "gate": scan.gate,
                                    "outcome": "other_region",
                                    "message": "upload this scan in its own batch"})
                    continue
                results.append(await self._apply(scan, scanner, theatres, offline=True))
            except (CheckinRefused, TicketNotValid, Forbidden) as exc:
                results.append({"nonce": scan.nonce, "gate": scan.gate, **exc.body(),
                                "outcome": exc.details.get("reason", exc.code)})
        doubles = [{"booking_id": r["booking_id"], "ticket_id": r.get("ticket_id"),
                    "first": {"gate": r["prior_gate"], "at": r["prior_at"]},
                    "second": {"gate": r["gate"], "at": r["scanned_at"], "nonce": r["nonce"]}}
                   for r in results if r["outcome"] == "entered_twice"]
        return {"results": results, "entered_twice": doubles}

    async def _apply(self, scan: ScanRequest, scanner: str, theatres: frozenset[str], *,
                     offline: bool) -> dict[str, Any]:
        show = await self.show_of(scan.payload)
        if show.theatre_id not in theatres:
            raise Forbidden(f"this scanner's token is not for theatre {show.theatre_id!r}",
                            reason="other_theatre", theatre_id=show.theatre_id)
        ticket = genuine(scan.payload, self._tickets.keys.verifying(), self._secrets)
        if scan.show_id is not None and scan.show_id != ticket.show_id:
            raise CheckinRefused("wrong_show", show_id=ticket.show_id,
                                 booking_id=ticket.booking_id)
        at = (scanned_at(scan) if offline else None) or datetime.now(UTC)
        if not in_window(self._settings, show.starts_at, at):
            raise CheckinRefused("outside_window", starts_at=show.starts_at.isoformat(),
                                 booking_id=ticket.booking_id)
        async with self._home.write(show.region, show.id) as conn:
            row = await ledger.checkin(
                conn, show=show.id, booking=ticket.booking_id,
                seats=None if ticket.seat_ids is None else list(ticket.seat_ids),
                nonce=scan.nonce, gate=scan.gate, scanner=scanner,
                direction=scan.direction, at=at, offline=offline)
        self._metrics.checkin_scans.labels(self._metrics.region, show.region,
                                           row.outcome).inc()
        if row.outcome == "unknown_booking":
            raise CheckinRefused("unknown_booking", booking_id=ticket.booking_id)
        answer: dict[str, Any] = {
            "outcome": row.outcome, "replayed": row.replayed, "booking_id": ticket.booking_id,
            "ticket_id": ticket_keys.ticket_id(ticket.booking_id), "show_id": show.id,
            "theatre_id": show.theatre_id, "screen": show.screen_name,
            "seat_ids": row.seats, "direction": scan.direction, "nonce": scan.nonce,
            "gate": row.gate, "scanned_at": _iso(row.scanned_at)}
        if row.prior_at is not None:
            answer["prior_at"], answer["prior_gate"] = _iso(row.prior_at), row.prior_gate
        else:
            answer["prior_at"] = answer["prior_gate"] = None
        if row.outcome == "not_confirmed":
            answer["booking_status"] = row.booking_status
        return answer

    async def counts(self, shows: list[ShowInfo]) -> list[dict[str, Any]]:
        """Sold, admitted and inside now, per show (each at its home region)."""
        by_region: dict[str, list[int]] = {}
        for show in shows:
            by_region.setdefault(show.region, []).append(show.id)
        out = []
        for region, show_ids in by_region.items():
            async with self._home.connection(region) as conn:
                out.extend(await ledger.checkin_counts(conn, show_ids))
        return out


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()
