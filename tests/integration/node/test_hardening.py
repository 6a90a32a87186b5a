"""Hostile input at the HTTP layer, as a fuzzer sends it: bodies that break the JSON
parser, oversized and chunked bodies, huge headers, slow clients, bad socket messages.
Each is a 4xx with a JSON error, or a closed connection; never a 500, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from bookcluster.booking.holds import validate_hold_request
from bookcluster.booking.signing import SIGNATURE_HEADER, sign_webhook
from bookcluster.errors import InvalidInput
from bookcluster.topology.model import Endpoint
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_bad_input import nothing_changed
from tests.integration.node.test_holds import hold
from tests.integration.support import Session, bearer, call, free_ports

GUARD_TIMEOUT_S = 1.0  # header and body timeout of the `guarded` node
CLOSE_MARGIN_S = 2.0  # timer slack on a loaded 2-core machine

HOSTILE_BODIES = {
    "5000-digit integer": b'{"user_id": "u", "seat_ids": ["A1"], "n": ' + b"9" * 5000 + b"}",
    "nested 7000 deep": b"[" * 7000 + b"]" * 7000,  # past the recursion limit
    "nested 900 deep": b'{"user_id": "u", "seat_ids": ["A1"], "n": ' + b"[" * 900
                       + b"]" * 900 + b"}",  # parses, but code walking it again might not
    "not UTF-8": b'{"user_id": "\xff\xfe", "seat_ids": ["A1"]}',
    "NaN": b'{"user_id": "u", "seat_ids": ["A1"], "n": NaN}',
}


@pytest_asyncio.fixture(scope="module")
async def guarded(cluster: Cluster) -> AsyncIterator[tuple[str, int]]:
    """(host, port) of an extra north node with short header and body timeouts."""
    port = free_ports(1)[0]
    child = await cluster.launcher.start_extra_node(
        "north", Endpoint("127.0.0.1", port),
        ["--header-timeout", f"{GUARD_TIMEOUT_S}s", "--body-timeout", f"{GUARD_TIMEOUT_S}s"])
    try:
        yield "127.0.0.1", port
    finally:
        cluster.launcher.stop_child(child.spec.name)


def webhook_secret() -> str:
    assert Session.topology is not None
    return Session.topology.secrets.get("webhook_secret")


async def hang_up(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def post_raw(http: aiohttp.ClientSession, url: str, body: bytes,
                   **kwargs: Any) -> tuple[int, Any]:
    return await call(http, "POST", url, data=body, user="u",
                      headers={"Content-Type": "application/json", **kwargs.pop("headers", {})},
                      **kwargs)


async def test_hostile_json_bodies_are_422(clean: Cluster, http: aiohttp.ClientSession,
                                           catalog: Any) -> None:
    node = clean.node("north")
    for region in ("north", "south"):  # parsed here, and parsed at the home node (forwarded)
        show = shows_in(clean, catalog, region)[0]
        for name, body in HOSTILE_BODIES.items():
            status, answer = await post_raw(http, f"{node}/booking/seats/{show}/lock", body)
            assert (status, answer["error"]) == (422, "invalid_input"), (region, name, answer)
            assert answer["message"]
        await nothing_changed(clean, show)
    show = shows_in(clean, catalog, "north")[0]
    _, held = await hold(http, node, show, "u", seats_of(catalog, show, 1))
    url = f"{node}/booking/booking/{held['booking_id']}/confirm"
    for name, body in HOSTILE_BODIES.items():
        status, answer = await post_raw(http, url, body, headers={"Idempotency-Key": name})
        assert (status, answer["error"]) == (422, "invalid_input"), (name, answer)
    rows = await clean.fetch("north", "SELECT status FROM booking")
    assert [r["status"] for r in rows] == ["INITIATED"]


async def test_hostile_webhooks_are_4xx(clean: Cluster, http: aiohttp.ClientSession,
                                        catalog: Any) -> None:
    url = f"{clean.node('north')}/payments/webhook"
    body = b'{"event_id": "e"}'
    mac = sign_webhook(webhook_secret(), body).split(",v1=")[1]
    for t in ("9" * 4000, "\u00b2", "\u0661\u0662", "1" * 13, " 12", "+12", "0x1", ""):
        status, answer = await post_raw(http, url, body,
                                        headers={SIGNATURE_HEADER: f"t={t},v1={mac}"})
        assert (status, answer["error"]) == (400, "malformed_signature"), (t, answer)
    for name, hostile in HOSTILE_BODIES.items():  # signed: they reach the parser
        status, answer = await post_raw(http, url, hostile, headers={
            SIGNATURE_HEADER: sign_webhook(webhook_secret(), hostile)})
        assert (status, answer["error"]) == (422, "invalid_input"), (name, answer)
    assert not await clean.fetch("north", "SELECT 1 FROM payment_event")


async def megabyte() -> AsyncIterator[bytes]:
    for _ in range(16):
        yield b"[" + b"1," * 32 * 1024 + b"1]"


async def test_bodies_over_the_limit_are_413_also_when_chunked(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    node = clean.node("north")
    for region in ("north", "south"):
        url = f"{node}/booking/seats/{shows_in(clean, catalog, region)[0]}/lock"
        async with http.post(url, data=megabyte(), headers=bearer("u")) as resp:  # chunked
            assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
            answer = await resp.json()
            assert (resp.status, answer["error"]) == (413, "body_too_large"), (region, answer)
        status, answer = await post_raw(http, url, b" " * (16 * 1024 + 1))
        assert (status, answer["error"]) == (413, "body_too_large")
    async with http.post(f"{node}/payments/webhook", data=megabyte(),
                         headers={SIGNATURE_HEADER: "t=1,v1=00"}) as resp:
        assert (resp.status, (await resp.json())["error"]) == (413, "body_too_large")
    status, _ = await call(http, "GET", f"{node}/healthz")
    assert status == 200


async def test_body_that_does_not_arrive_is_408(clean: Cluster, catalog: Any,
                                               guarded: tuple[str, int]) -> None:
    show = shows_in(clean, catalog, "north")[0]
    reader, writer = await asyncio.open_connection(*guarded)
    try:
        started = time.monotonic()
        writer.write(f"POST /booking/seats/{show}/lock HTTP/1.1\r\nHost: node\r\n"
                     f"Authorization: {bearer('u')['Authorization']}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                     '{"user_id": '.encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"),
                                      GUARD_TIMEOUT_S + CLOSE_MARGIN_S)
        elapsed = time.monotonic() - started
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        answer = json.loads(await reader.readexactly(length))
    finally:
        await hang_up(writer)
    print(f"stalled body answered in {elapsed:.2f} s")
    assert head.startswith(b"HTTP/1.1 408 ") and answer["error"] == "request_timeout"
    assert elapsed >= GUARD_TIMEOUT_S - 0.05
    await nothing_changed(clean, show)


async def trickle(host: str, port: int) -> tuple[float, bytes]:
    """Sends a request's headers one byte per 0.3 s; (seconds until the server hung up,
    what it answered)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    reader, writer = await asyncio.open_connection(host, port)
    answered = b""
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: node\r\n")
        for byte in b"X-Slow: " + b"a" * 100:
            try:
                writer.write(bytes([byte]))
                await writer.drain()
                data = await asyncio.wait_for(reader.read(1024), 0.3)
            except TimeoutError:
                continue
            except ConnectionError:
                break
            if not data:
                break
            answered += data
        return loop.time() - started, answered
    finally:
        await hang_up(writer)


async def test_slow_headers_are_cut_off(guarded: tuple[str, int],
                                        http: aiohttp.ClientSession) -> None:
    host, port = guarded
    slow = [asyncio.ensure_future(trickle(host, port)) for _ in range(50)]
    silent_reader, silent = await asyncio.open_connection(host, port)  # never sends a byte
    idle_reader, idle = await asyncio.open_connection(host, port)  # keep-alive between requests
    try:
        await asyncio.sleep(0.2)
        status, _ = await call(http, "GET", f"http://{host}:{port}/healthz")
        assert status == 200  # a normal client is served while 50 trickle
        for _ in range(2):
            idle.write(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
            head = await asyncio.wait_for(idle_reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 ")
            await idle_reader.readexactly(next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")))
            await asyncio.sleep(GUARD_TIMEOUT_S + 0.5)  # idle is not slow: it stays open
        assert await asyncio.wait_for(silent_reader.read(1), 1) == b""
        results = await asyncio.gather(*slow)
    finally:
        for task in slow:
            task.cancel()
        await hang_up(silent)
        await hang_up(idle)
    closed_after = sorted(seconds for seconds, _ in results)
    print(f"50 trickling sockets closed after {closed_after[0]:.2f}-{closed_after[-1]:.2f} s "
          f"(header timeout {GUARD_TIMEOUT_S} s)")
    assert all(answered == b"" for _, answered in results)
    assert GUARD_TIMEOUT_S - 0.05 <= closed_after[0]
    assert closed_after[-1] <= GUARD_TIMEOUT_S + CLOSE_MARGIN_S


@pytest.mark.parametrize("headers", [
    {"X-Big": "a" * 9000},
    {f"X-Many-{i}": "a" for i in range(100)},
], ids=["9 KiB field", "100 fields"])
async def test_oversized_headers_are_400(cluster: Cluster, http: aiohttp.ClientSession,
                                         headers: dict[str, str]) -> None:
    status, answer = await call(http, "GET", f"{cluster.node('north')}/healthz",
                                headers=headers)
    assert (status, answer["error"]) == (400, "malformed_request")


async def test_seat_cap_is_checked_first(clean: Cluster, http: aiohttp.ClientSession,
                                         catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[0]
    seat_ids = ["A1"] * 2000  # just under the body limit; duplicates too: the cap wins
    started = time.monotonic()
    status, answer = await hold(http, clean.node("north"), show, "u", seat_ids)
    assert time.monotonic() - started < 2.0
    assert (status, answer["error"], answer["limit"]) == (422, "invalid_input", 10)
    assert "at most 10 seats" in answer["message"]
    await nothing_changed(clean, show)


def test_hold_validation_is_linear() -> None:
    many = [f"S{i}" for i in range(100_000)]
    started = time.monotonic()
    with pytest.raises(InvalidInput, match="at most 10"):
        validate_hold_request({"user_id": "u", "seat_ids": many * 2}, 10, "u")
    with pytest.raises(InvalidInput, match="duplicates") as refused:
        validate_hold_request({"user_id": "u", "seat_ids": [*many, "S7"]}, 10**6, "u")
    assert refused.value.details["seats"] == ["S7"]
    assert time.monotonic() - started < 1.0  # list.count per id: minutes


async def test_live_socket_survives_bad_messages(clean: Cluster, http: aiohttp.ClientSession,
                                                 catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[0]
    async with http.ws_connect(f"{clean.node('north')}/shows/{show}/live") as ws:
        first = await ws.receive_json(timeout=5)
        assert first["type"] == "snapshot"
        for bad in ("[" * 3000, '{"type": ' + "[" * 2000 + "]" * 2000 + "}", "not json",
                    "[1]", "9" * 4000, "\"resync\""):
            await ws.send_str(bad)
            answer = await ws.receive_json(timeout=5)
            assert answer["type"] == "error" and answer["error"] == "unknown_message"
        await ws.send_str(json.dumps({"type": "resync"}))
        again = await ws.receive_json(timeout=5)
        assert again["type"] == "snapshot" and again["version"] == first["version"]
        await ws.send_str(" " * 5000)  # over the message limit: closed, not buffered
        closing = await ws.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1009
