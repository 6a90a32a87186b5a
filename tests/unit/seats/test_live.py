"""The live hub's own work (re-syncs, closing slow sockets): owned, and a failure is
logged, counted and ends the socket it was for. The sockets are stand-ins with
aiohttp's WebSocketResponse methods the hub calls; nothing here touches a network."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest
from aiohttp import web

from bookcluster.seats.live import LiveHub
from bookcluster.topology.errors import RegionUnavailable


class Socket:
    """What the hub uses of a WebSocketResponse; `fail` is raised by every send."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.fail = fail
        self.sent: list[str] = []
        self.closed: tuple[int, bytes] | None = None

    async def send_str(self, text: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append(text)

    async def close(self, *, code: int, message: bytes) -> bool:
        self.closed = (code, message)
        return True


def ws(sock: Socket) -> web.WebSocketResponse:
    return cast(web.WebSocketResponse, sock)


async def settle(hub: LiveHub) -> None:
    """Until the work the hub started by itself has ended."""
    for _ in range(100):
        if not hub._tasks:
            return
        await asyncio.sleep(0)
    raise AssertionError("the hub's tasks did not end")


async def snapshot_of(show_id: int) -> dict[str, Any]:
    return {"show_id": show_id, "version": 7, "seats": []}


async def test_a_resync_that_fails_is_logged_counted_and_ends_its_socket(
        caplog: pytest.LogCaptureFixture) -> None:
    async def broken(show_id: int) -> dict[str, Any]:
        raise ValueError("no snapshot today")

    failures: list[tuple[str, str]] = []
    hub = LiveHub(broken, lambda what, why: failures.append((what, why)))
    sock = Socket()
    hub.join(1, ws(sock))
    with caplog.at_level(logging.ERROR, logger="bookcluster.seats.live"):
        hub.resync(1)
        await settle(hub)
    assert failures == [("resync", "error")]
    assert "no snapshot today" in caplog.text
    assert sock.closed is not None and sock.closed[0] == 1011
    assert not hub.watching(1) and hub.count() == 0  # not left buffering forever


async def test_a_resync_of_a_socket_that_went_away_is_counted_as_gone() -> None:
    failures: list[tuple[str, str]] = []
    hub = LiveHub(snapshot_of, lambda what, why: failures.append((what, why)))
    sock = Socket(fail=ConnectionResetError("peer left"))
    hub.join(1, ws(sock))
    hub.resync(1)
    await settle(hub)
    assert failures == [("resync", "gone")]
    assert hub.count() == 0


async def test_a_resync_that_works_sends_the_snapshot_and_counts_nothing() -> None:
    failures: list[tuple[str, str]] = []
    hub = LiveHub(snapshot_of, lambda what, why: failures.append((what, why)))
    sock = Socket()
    live = hub.join(1, ws(sock))
    hub.resync(1)
    await settle(hub)
    assert failures == [] and len(sock.sent) == 1 and live.version == 7 and not live.syncing
    assert sock.closed is None and hub.count() == 1


async def test_close_cancels_and_awaits_the_work_still_running() -> None:
    started = asyncio.Event()

    async def stuck(show_id: int) -> dict[str, Any]:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    failures: list[tuple[str, str]] = []
    hub = LiveHub(stuck, lambda what, why: failures.append((what, why)))
    sock = Socket()
    hub.join(1, ws(sock))
    hub.resync(1)
    await started.wait()
    tasks = list(hub._tasks)
    assert len(tasks) == 1
    await hub.close()
    assert tasks[0].cancelled() and not hub._tasks
    assert failures == []  # a cancellation is shutdown, not a failure
    assert sock.closed == (1001, b"node shutting down")


async def test_a_resync_in_an_outage_is_counted_as_unavailable(
        caplog: pytest.LogCaptureFixture) -> None:
    async def outage(show_id: int) -> dict[str, Any]:
        raise RegionUnavailable("south", "redis master and local replica")

    failures: list[tuple[str, str]] = []
    hub = LiveHub(outage, lambda what, why: failures.append((what, why)))
    sock = Socket()
    hub.join(1, ws(sock))
    with caplog.at_level(logging.WARNING, logger="bookcluster.seats.live"):
        hub.resync(1)
        await settle(hub)
    assert failures == [("resync", "unavailable")]
    assert "Traceback" not in caplog.text and "south" in caplog.text
    assert sock.closed is not None and sock.closed[0] == 1011 and hub.count() == 0
