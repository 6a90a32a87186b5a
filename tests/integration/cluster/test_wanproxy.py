"""The WAN proxy in front of a real redis-server: delay, order, blackhole, reset, control API."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bookcluster.devsim.wanproxy import Link, ProxySet
from bookcluster.local.binaries import find_redis_server
from bookcluster.local.supervisor import ProcessSpec, Supervisor
from tests.integration.support import call, free_ports

LINK = "north->south.redis.master"


async def _wait_for_ping(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with redis_client(port, socket_timeout=1) as client:
        while True:
            try:
                await client.ping()
                return
            except (RedisConnectionError, OSError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)


@pytest_asyncio.fixture(scope="module")
async def redis_port(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[int]:
    tmp = tmp_path_factory.mktemp("wanproxy-redis")
    port = free_ports(1)[0]
    binary, _ = find_redis_server()
    supervisor = Supervisor(tmp)
    supervisor.start(ProcessSpec(
        name="wanproxy-target", region="test", role="redis-master", host="127.0.0.1",
        port=port,
        argv=(str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", "--protected-mode", "no", "--dir", str(tmp)),
        log_path=tmp / "redis.log", address=f"redis://127.0.0.1:{port}"))
    try:
        await _wait_for_ping(port)
        yield port
    finally:
        supervisor.stop()


@pytest_asyncio.fixture
async def proxies(redis_port: int) -> AsyncIterator[ProxySet]:
    listen, control = free_ports(2)
    link = Link(LINK, "127.0.0.1", listen, "127.0.0.1", redis_port)
    async with ProxySet([link], control_port=control) as proxy_set:
        yield proxy_set


@asynccontextmanager
async def redis_client(port: int, **kwargs: Any) -> AsyncIterator[aioredis.Redis]:
    """A client that never retries: a fault must surface on the command that met it."""
    options: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 2,
                               "retry": Retry(NoBackoff(), 0), **kwargs}
    client = aioredis.Redis(host="127.0.0.1", port=port, **options)
    try:
        yield client
    finally:
        await client.aclose()


def proxy_port(proxies: ProxySet) -> int:
    return proxies.link(LINK).listen_port


async def timed_ping(client: aioredis.Redis) -> float:
    start = time.perf_counter()
    assert await client.ping()
    return time.perf_counter() - start


async def test_delay_is_paid_each_way(proxies: ProxySet) -> None:
    await proxies.update(LINK, delay_ms=40)
    async with redis_client(proxy_port(proxies)) as client:
        await client.ping()  # connection setup sends commands of its own
        rtts = [await timed_ping(client) for _ in range(3)]
    assert all(0.080 <= rtt < 0.080 + 0.200 for rtt in rtts), rtts


async def test_zero_delay_is_fast(proxies: ProxySet) -> None:
    async with redis_client(proxy_port(proxies)) as client:
        await client.ping()
        assert await timed_ping(client) < 0.050


async def test_pipelined_commands_arrive_in_order(proxies: ProxySet) -> None:
    await proxies.update(LINK, delay_ms=5)
    async with redis_client(proxy_port(proxies)) as client:
        await client.delete("wanproxy:counter")
        async with client.pipeline(transaction=False) as pipe:
            for _ in range(500):
                pipe.incr("wanproxy:counter")
            assert await pipe.execute() == list(range(1, 501))
        await client.delete("wanproxy:counter")


async def test_large_values_cross_the_queue_cap_intact(proxies: ProxySet) -> None:
    """10 MiB each way is more than the 4 MiB a direction may queue: backpressure, no loss.

    It is ~160 chunks each way; a proxy that slept 40 ms per chunk in turn would need
    over 12 s for the round trip, a pipelined one about 2 x 40 ms plus copying.
    """
    await proxies.update(LINK, delay_ms=40)
    value = bytes(range(256)) * (10 * 4096)
    async with redis_client(proxy_port(proxies), socket_timeout=20) as client:
        await client.ping()
        start = time.perf_counter()
        await client.set("wanproxy:big", value)
        assert await client.get("wanproxy:big") == value
        elapsed = time.perf_counter() - start
        await client.delete("wanproxy:big")
    assert proxies.link(LINK).bytes_forwarded > 2 * len(value)
    assert elapsed < 4.0, elapsed


async def test_blackhole_holds_traffic_until_healed(proxies: ProxySet) -> None:
    port = proxy_port(proxies)
    async with redis_client(port, socket_timeout=0.5) as before:
        await before.ping()
        await proxies.update(LINK, mode="blackhole")
        with pytest.raises(RedisTimeoutError):
            await before.ping()
        async with redis_client(port, socket_timeout=0.5) as during:
            with pytest.raises(RedisTimeoutError):
                await during.ping()
    await proxies.update(LINK, mode="normal")
    async with redis_client(port) as after:
        assert await after.ping()


async def test_blackhole_keeps_connections_open(proxies: ProxySet) -> None:
    port = proxy_port(proxies)
    await proxies.update(LINK, mode="blackhole")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(100), 0.3)
        assert proxies.link(LINK).open_connections == 1
        # Healing delivers what was held: a partition that heals loses no bytes.
        await proxies.update(LINK, mode="normal")
        assert await asyncio.wait_for(reader.read(100), 5) == b"+PONG\r\n"
    finally:
        writer.close()
        await writer.wait_closed()


async def test_blackhole_pushes_back_instead_of_buffering(proxies: ProxySet) -> None:
    """While held, a direction queues at most ~4 MiB: a 64 MiB write stalls, then heals."""
    port = proxy_port(proxies)
    value = b"x" * (64 * 1024 * 1024)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"PING\r\n")  # pipes are up: a new connection would not even be read
        assert await asyncio.wait_for(reader.read(100), 5) == b"+PONG\r\n"
        await proxies.update(LINK, mode="blackhole")
        writer.write(b"*3\r\n$3\r\nSET\r\n$12\r\nwanproxy:big\r\n$%d\r\n" % len(value))
        writer.write(value + b"\r\n")
        with pytest.raises(TimeoutError):  # kernel buffers and the queue hold far less
            await asyncio.wait_for(writer.drain(), 1.0)
        await proxies.update(LINK, mode="normal")
        await asyncio.wait_for(writer.drain(), 20)
        assert await asyncio.wait_for(reader.read(100), 20) == b"+OK\r\n"
        writer.write(b"DEL wanproxy:big\r\n")
        assert await asyncio.wait_for(reader.read(100), 5) == b":1\r\n"
    finally:
        writer.close()
        await writer.wait_closed()


async def test_reset_kills_open_and_new_connections(proxies: ProxySet) -> None:
    port = proxy_port(proxies)
    async with redis_client(port) as before:
        await before.ping()
        await proxies.update(LINK, mode="reset")
        with pytest.raises(RedisConnectionError):
            await before.ping()
        assert proxies.link(LINK).open_connections == 0
        async with redis_client(port) as during:
            with pytest.raises(RedisConnectionError):
                await during.ping()
    await proxies.update(LINK, mode="normal")
    async with redis_client(port) as after:
        assert await after.ping()


async def test_reset_sends_rst(proxies: ProxySet) -> None:
    port = proxy_port(proxies)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"PING\r\n")
        assert await asyncio.wait_for(reader.read(100), 5) == b"+PONG\r\n"
        await proxies.update(LINK, mode="reset")
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(100), 5)
    finally:
        writer.close()
        with suppress(ConnectionResetError):  # the reset is also the close's outcome
            await writer.wait_closed()


async def test_control_api(proxies: ProxySet) -> None:
    base = proxies.control_url
    assert base is not None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        assert (await call(http, "GET", f"{base}/healthz"))[0] == 200
        status, links = await call(http, "GET", f"{base}/links")
        assert status == 200
        assert [link["name"] for link in links] == [LINK]
        assert links[0]["listen"] == f"127.0.0.1:{proxy_port(proxies)}"
        assert {k: links[0][k] for k in ("delay_ms", "mode", "open_connections")} == {
            "delay_ms": 0, "mode": "normal", "open_connections": 0}

        status, link = await call(http, "POST", f"{base}/links/{LINK}", json={"delay_ms": 30})
        assert (status, link["delay_ms"], link["mode"]) == (200, 30, "normal")
        async with redis_client(proxy_port(proxies)) as client:
            await client.ping()
            assert await timed_ping(client) >= 0.060
            status, links = await call(http, "GET", f"{base}/links")
            assert links[0]["open_connections"] == 1
            assert links[0]["bytes_forwarded"] > 0

            status, links = await call(http, "POST", f"{base}/links", json={"mode": "reset"})
            assert (status, links[0]["mode"], links[0]["open_connections"]) == (200, "reset", 0)
            with pytest.raises(RedisConnectionError):
                await client.ping()
        status, links = await call(http, "POST", f"{base}/links",
                                   json={"mode": "normal", "delay_ms": 0})
        assert (status, links[0]["mode"], links[0]["delay_ms"]) == (200, "normal", 0)

        status, body = await call(http, "POST", f"{base}/links/nowhere", json={"mode": "reset"})
        assert (status, body["error"], body["link"]) == (404, "not_found", "nowhere")
        assert "nowhere" in body["message"]
        for bad, field in (({"mode": "flaky"}, "mode"), ({"delay_ms": -1}, "delay_ms"),
                           ({"delay_ms": "40"}, "delay_ms"), ({"delay_ms": True}, "delay_ms"),
                           ({"jitter_ms": 5}, "jitter_ms"), ([1], "body")):
            status, body = await call(http, "POST", f"{base}/links/{LINK}", json=bad)
            assert (status, body["error"], body["field"]) == (422, "invalid_input", field), bad
        status, body = await call(http, "POST", f"{base}/links", data=b"not json")
        assert (status, body["error"]) == (422, "invalid_input")
        status, links = await call(http, "GET", f"{base}/links")
        assert (links[0]["mode"], links[0]["delay_ms"]) == ("normal", 0)  # nothing applied


async def test_process_entry_point(redis_port: int, tmp_path: Path) -> None:
    listen, control = free_ports(2)
    config = tmp_path / "links.json"
    config.write_text(json.dumps({"links": [{
        "name": LINK, "listen_host": "127.0.0.1", "listen_port": listen,
        "target_host": "127.0.0.1", "target_port": redis_port, "delay_ms": 10,
        "mode": "normal"}]}))
    supervisor = Supervisor(tmp_path)
    child = supervisor.start(ProcessSpec(
        name="wanproxy", region="test", role="wanproxy", host="127.0.0.1", port=control,
        argv=(sys.executable, "-m", "bookcluster.devsim.wanproxy", "--config", str(config),
              "--control-port", str(control)),
        log_path=tmp_path / "wanproxy.log", address=f"http://127.0.0.1:{control}"))
    try:
        await _wait_for_healthz(f"http://127.0.0.1:{control}/healthz", child.popen)
        async with redis_client(listen) as client:
            await client.ping()
            assert await timed_ping(client) >= 0.020
        child.popen.send_signal(signal.SIGTERM)
        assert await _wait_for_exit(child.popen, 10) == 0
    finally:
        supervisor.stop()
    log = (tmp_path / "wanproxy.log").read_text()
    assert f"link {LINK}: 127.0.0.1:{listen} -> 127.0.0.1:{redis_port}" in log
    assert "stopped: 1 links" in log


async def _wait_for_healthz(url: str, popen: Any, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
        while True:
            assert popen.poll() is None, "wanproxy exited before serving"
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, "wanproxy never answered /healthz"
            await asyncio.sleep(0.05)


async def _wait_for_exit(popen: Any, timeout_s: float) -> int | None:
    deadline = time.monotonic() + timeout_s
    while popen.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return popen.poll()  # type: ignore[no-any-return]
