"""A user's booking list: one read for every caller at once, kept a moment, read afresh
after the user's own write through the node (no servers: the read is a stand-in)."""

from __future__ import annotations

import asyncio
from typing import Any

from bookcluster.booking import holds as bookings
from bookcluster.booking.holds import BookingService


def service_reading(answers: list[dict[str, Any]]) -> tuple[BookingService, list[str]]:
    """A BookingService whose every-region read returns `answers` in turn; the list
    records each read."""
    service = BookingService.__new__(BookingService)
    service._lists, service._listing, service._written = {}, {}, {}
    reads: list[str] = []

    async def list_now(user: str) -> dict[str, Any]:
        reads.append(user)
        await asyncio.sleep(0.01)
        return answers[len(reads) - 1]

    service._list_now = list_now  # type: ignore[method-assign]
    return service, reads


def answer(*booking_ids: str, unavailable: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"user_id": "u", "bookings": [{"booking_id": b} for b in booking_ids],
            "unavailable_regions": list(unavailable)}


async def test_one_read_for_many_callers_and_a_fresh_one_after_the_users_write() -> None:
    service, reads = service_reading([answer(), answer("b1"), answer("b1", "b2")])
    lists = await asyncio.gather(*(service.list_for_user("u") for _ in range(50)))
    assert reads == ["u"] and all(got == answer() for got in lists)
    assert await service.list_for_user("u") == answer()  # kept: no second read
    assert reads == ["u"]
    service.wrote("u")  # a hold of theirs went through this node
    assert await service.list_for_user("u") == answer("b1")
    assert reads == ["u", "u"]


async def test_a_list_is_kept_only_a_moment_and_never_with_a_region_missing(
        monkeypatch: Any) -> None:
    monkeypatch.setattr(bookings, "LIST_CACHE_S", 0.05)
    service, reads = service_reading([answer(unavailable=("south",)), answer("b1"),
                                      answer("b1", "b2")])
    assert (await service.list_for_user("u"))["unavailable_regions"] == ["south"]
    assert await service.list_for_user("u") == answer("b1")  # not kept: read again
    assert await service.list_for_user("u") == answer("b1")  # kept
    await asyncio.sleep(0.06)
    assert await service.list_for_user("u") == answer("b1", "b2")
    assert len(reads) == 3
