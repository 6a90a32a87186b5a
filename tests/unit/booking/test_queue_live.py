"""The queue hub's fan-out: one read per on-sale round, one shared message per change, a
socket's own position only when its state changes. The sockets are stand-ins with the
WebSocketResponse methods the hub calls; the published state is a variable here."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from aiohttp import web

from bookcluster.booking.onsale_state import Counters, OnSale
from bookcluster.booking.passes import QueueTicket
from bookcluster.booking.queue_live import QueueHub, state_of
from bookcluster.booking.queue_order import permute
from tests.unit.seats.test_live import Socket

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
ONSALE = OnSale("os7-0a0b0c0d", (7,), NOW - timedelta(minutes=5), NOW, 600, 2, "north")


class Published:
    """The on-sale's counters as the replica has them, and the reads made of them."""

    def __init__(self) -> None:
        self.counters: Counters | None = None
        self.reads = 0

    def set(self, frontier: int, *, seed: int | None = 5, sold_out: bool = False,
            rate: float = 2.0) -> None:
        self.counters = Counters(seed, None if seed is None else 4, 6, frontier, sold_out,
                                 rate, 0)

    async def read(self, onsale: str) -> tuple[OnSale | None, Counters | None]:
        self.reads += 1
        return ONSALE, self.counters


async def answer(definition: OnSale, counters: Counters | None,
                 ticket: QueueTicket) -> dict[str, Any]:
    return {"user": ticket.user, "state": state_of(ticket, counters)}


def messages(sock: Socket) -> list[dict[str, Any]]:
    return [json.loads(text) for text in sock.sent]


def seq_at(place: int, seed: int = 5, n: int = 4) -> int:
    """The early join whose place is `place` under the test's seed."""
    return next(s for s in range(n) if permute(seed, n, s) == place)


async def test_one_read_per_round_and_a_push_only_when_the_queue_moves() -> None:
    published = Published()
    published.set(0, seed=None)
    hub = QueueHub(published.read, answer, watch_s=3600)
    first, last = Socket(), Socket()
    await hub.join(ONSALE.id, QueueTicket(ONSALE.id, "first", seq_at(0)),
                   cast(web.WebSocketResponse, first))
    await hub.join(ONSALE.id, QueueTicket(ONSALE.id, "last", seq_at(3)),
                   cast(web.WebSocketResponse, last))
    assert [m["state"] for m in messages(first) + messages(last)] == ["unplaced"] * 2
    reads = published.reads
    assert not await hub.poll_once(ONSALE.id)  # nothing moved: nothing sent
    published.set(0, rate=3.5)  # the draw: each socket learns its place
    assert await hub.poll_once(ONSALE.id)
    assert messages(first)[-1] == messages(last)[-1] | {"user": "first"}
    assert messages(last)[-1] == {"type": "position", "user": "last", "state": "waiting"}
    published.set(0, rate=1.0)  # only the rate moved: no push
    assert not await hub.poll_once(ONSALE.id)
    published.set(1)  # the first is admitted; the last is told the count, shared
    assert await hub.poll_once(ONSALE.id)
    assert messages(first)[-1]["state"] == "admitted"
    assert messages(last)[-1] == {"type": "queue", "onsale": ONSALE.id, "admitted": 1,
                                  "joined": 6, "rate_per_s": 2.0, "sold_out": False,
                                  "sealed": True}
    published.set(2)
    await hub.poll_once(ONSALE.id)
    assert messages(first)[-1]["type"] == messages(last)[-1]["type"] == "queue"
    assert first.sent[-1] == last.sent[-1]  # one text for every socket
    published.set(2, sold_out=True)
    await hub.poll_once(ONSALE.id)
    assert messages(last)[-1] == {"type": "position", "user": "last", "state": "sold_out"}
    assert published.reads - reads == 6  # one per round, however many sockets
    await hub.close()
    assert first.closed == last.closed == (1001, b"node shutting down")


async def test_the_watcher_lives_while_the_onsale_has_sockets_and_a_gone_socket_leaves(
        ) -> None:
    published = Published()
    published.set(0)
    hub = QueueHub(published.read, answer, watch_s=3600)
    gone, stays = Socket(), Socket()
    ticket = QueueTicket(ONSALE.id, "u", seq_at(3))
    await hub.join(ONSALE.id, ticket, cast(web.WebSocketResponse, gone))
    sock = await hub.join(ONSALE.id, ticket, cast(web.WebSocketResponse, stays))
    assert hub.watching(ONSALE.id) and hub.count() == 2
    gone.fail = ConnectionResetError("went away")
    published.set(1)
    await hub.poll_once(ONSALE.id)
    assert hub.count() == 1 and gone.closed == (1011, b"too slow")
    await hub.leave(sock)
    assert not hub.watching(ONSALE.id) and hub.count() == 0
    await hub.close()
