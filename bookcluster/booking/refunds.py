"""Refunding a confirmed booking before its ticket went in at the door.

Allowed for the booking's owner (an operator: any booking) until the show's refund
cut-off (`settings.refund_closes_before`, default its start) and only before any door
entry of it. At the home region one statement (`bc_refund`, its own transaction)
locks the booking row, the lock a door scan takes too, so of a refund and a scan at
once exactly one wins: the loser is 409 `ticket_used`, or the door's `refunded`. It
moves the booking CONFIRMED -> CANCELLED, puts its seats back on sale (with 'unbook'
mirror rows: Redis learns it now, or from the worker, and the reconciler repairs),
and hands the payment back through the refund saga (REFUND_PENDING, a refund job that
refunds at the gateway, then REFUNDED). A refund asked again (a retry whose answer was
lost, with or without its `Idempotency-Key`) gets the same answer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from bookcluster.booking import ledger
from bookcluster.booking.holds import BookingService
from bookcluster.booking.ledger import Reason
from bookcluster.booking.ledger import RefundOutcome as Done
from bookcluster.catalog import ShowInfo
from bookcluster.errors import BookingNotConfirmed, NotFound, RefundClosed, TicketUsed
from bookcluster.seats import mirror
from bookcluster.stores import deadline, replication
from bookcluster.topology.errors import RegionUnavailable
from bookcluster.topology.model import Settings

# Kept back from the deadline when waiting for the standby, for the 503 to go out.
REPLICATION_MARGIN_S = 0.05


def closes_at(settings: Settings, starts_at: datetime) -> datetime:
    """When refunds of a show's tickets close."""
    return starts_at - timedelta(seconds=settings.refund_closes_before_s)


class Refunds:
    """Refunds of confirmed bookings, at their shows' home regions."""

    def __init__(self, bookings: BookingService) -> None:
        self.bookings = bookings
        self.home = bookings.home

    async def refund(self, booking_id: str, user: str,
                     operator: bool = False) -> tuple[str, bool]:
        """Refund `user`'s booking (an operator: anyone's). Returns the answer's JSON text
        and whether it is a replay (refunded before)."""
        show = await self.bookings.show_of_booking(booking_id)
        closed = closes_at(self.bookings.settings, show.starts_at)
        due = datetime.fromtimestamp(deadline.current().at, UTC)
        try:
            async with self.home.connection(show.region, writes=True) as conn:
                row = await ledger.refund(
                    conn, show=show.id, booking=booking_id, user=None if operator else user,
                    reason=f"refund asked by {user}", region=show.region, closes_at=closed,
                    deadline=due,
                    epoch=self.home.epoch)
                if row.outcome in (Done.REFUNDED, Done.REPLAY):
                    await self._replicated(conn, show)
        except ledger.Undone as exc:
            if exc.reason == Reason.DEADLINE:
                raise RegionUnavailable(show.region, "deadline passed before commit") from None
            raise
        metrics = self.bookings.metrics
        metrics.refunds.labels(metrics.region, show.region, row.outcome.value).inc()
        if row.outcome == Done.NOT_FOUND:
            raise NotFound(f"no booking {booking_id!r}", id=booking_id)
        if row.outcome == Done.TICKET_USED:
            raise TicketUsed(booking_id)
        if row.outcome == Done.NOT_CONFIRMED:
            raise BookingNotConfirmed(booking_id, row.detail[0])
        if row.outcome == Done.REFUND_CLOSED:
            raise RefundClosed(booking_id, closed.isoformat())
        assert row.body is not None
        if row.outcome == Done.REFUNDED:
            await mirror.apply_now(self.home, show.region,
                                   {("unbook", show.id, booking_id): row.detail})
        return row.body, row.outcome == Done.REPLAY

    async def _replicated(self, conn: asyncpg.Connection, show: ShowInfo) -> None:
        """Answered 200 only once the synchronous standby flushed it (as a confirm):
        until then its outcome is unknown, and a retry asks again."""
        if not self.home.replicated(show.region):
            return
        left = deadline.current().remaining() - REPLICATION_MARGIN_S
        if not await replication.wait_standby_flushed(conn, max(left, 0.0),
                                                      without_standby_give_up=True):
            raise RegionUnavailable(show.region, "postgres standby", outcome="unknown")
