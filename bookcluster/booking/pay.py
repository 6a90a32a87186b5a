"""`pay`: a payment intent at the gateway for a held booking's exact amount.

The gateway captures it (locally: the simulator, after `capture_delay`) and
sends the signed webhook; the region's saga then sells the seats. The client
polls the booking until it is CONFIRMED (or gives `payment_id` to `confirm`).
Asking twice returns the same intent while it can still be paid, so a retry
never charges twice. A web page passes `return_url`: its intent is a hosted
checkout, paid (or declined) by the customer on the gateway's page, which then
sends them back to it.
"""

from __future__ import annotations

from typing import Any

from bookcluster.booking.gateway import GatewayClient, Intent
from bookcluster.booking.holds import BookingService
from bookcluster.errors import BookingNotPending, NotFound

REUSABLE = ("PENDING", "CAPTURED")


class PaymentService:
    def __init__(self, bookings: BookingService, gateway: GatewayClient) -> None:
        self.bookings = bookings
        self.gateway = gateway

    async def pay(self, booking_id: str, owner: str,
                  return_url: str | None = None) -> dict[str, Any]:
        """The booking's intent; with `return_url` (a web page's), a new one is a hosted
        checkout that sends the customer back there once they paid or declined."""
        show = await self.bookings.show_of_booking(booking_id)
        # The booking row stays locked while the gateway answers (bounded by the
        # write deadline), so two concurrent `pay` calls make one intent.
        async with self.bookings.home.write(show.region, show.id) as conn:
            row = await conn.fetchrow(
                "SELECT status, amount_paise, intent_id FROM booking "
                "WHERE id = $1 AND user_id = $2 FOR UPDATE", booking_id, owner)
            if row is None:
                raise NotFound(f"no booking {booking_id!r}", id=booking_id)
            if row["status"] != "INITIATED":
                raise BookingNotPending(booking_id, row["status"])
            intent = None
            if row["intent_id"] is not None:
                intent = await self.gateway.intent(row["intent_id"])
            if intent is None or intent.status not in REUSABLE:
                intent = await self.gateway.create(booking_id, row["amount_paise"], show.region,
                                                   return_url)
                await conn.execute("UPDATE booking SET intent_id = $2, updated_at = now() "
                                   "WHERE id = $1", booking_id, intent.payment_id)
        return self._answer(intent)

    def _answer(self, intent: Intent) -> dict[str, Any]:
        return {"payment_id": intent.payment_id, "booking_id": intent.booking_id,
                "amount_paise": intent.amount_paise, "status": intent.status,
                "checkout_url": self.gateway.checkout_url(intent.payment_id)}
