"""The seat scripts are Redis-Cluster safe: every key of a show shares one slot."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from bookcluster.local.binaries import find_redis_server
from bookcluster.local.supervisor import ProcessSpec, Supervisor
from bookcluster.seats import keys
from bookcluster.seats.scripts import SeatScripts
from tests.integration.support import free_ports


def cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free too."""
    for _ in range(100):
        port = free_ports(1)[0]
        if port + 10000 < 65536 and port_is_free(port + 10000):
            return port
    raise RuntimeError("no port pair free for a cluster-mode Redis")


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def _serve_all_slots(client: aioredis.Redis) -> None:
    for _ in range(50):
        try:
            await client.ping()
            break
        except (aioredis.ConnectionError, OSError):  # not listening yet
            await asyncio.sleep(0.1)
    await client.execute_command("CLUSTER", "ADDSLOTS", *range(16384))
    while (await client.cluster("info"))["cluster_state"] != "ok":
        await asyncio.sleep(0.1)


@pytest_asyncio.fixture
async def cluster_redis(tmp_path: Path) -> AsyncIterator[aioredis.Redis]:
    port = cluster_port()
    binary, _ = find_redis_server()
    supervisor = Supervisor(tmp_path)
    supervisor.start(ProcessSpec(
        name="cluster-mode", region="test", role="redis-master", host="127.0.0.1", port=port,
        argv=(str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
              "--cluster-enabled", "yes", "--cluster-config-file", str(tmp_path / "nodes.conf"),
              "--dir", str(tmp_path)),
        log_path=tmp_path / "redis.log", address=f"redis://127.0.0.1:{port}"))
    client = aioredis.Redis(port=port, decode_responses=True, socket_timeout=2,
                            socket_connect_timeout=1)
    try:
        await asyncio.wait_for(_serve_all_slots(client), 20)
        yield client
    finally:
        await client.aclose()
        supervisor.stop()


async def test_show_keys_share_one_slot(cluster_redis: aioredis.Redis) -> None:
    for show in (1, 1001, 987654321):
        slots = {await cluster_redis.cluster("keyslot", k) for k in keys.show_keys(show)}
        assert len(slots) == 1


async def test_hold_script_runs_in_cluster_mode(cluster_redis: aioredis.Redis) -> None:
    scripts = SeatScripts()
    args = [keys.SEAT_CHANGES_CHANNEL, 1001]
    far = 4_102_444_800_000  # the scripts' deadline (unix ms, 2100)
    result = await scripts.run(cluster_redis, "hold", keys.show_keys(1001),
                               [*args, "b1001-00000000000000aa", 60000, 1, far, "A1", "A2"])
    assert result[0] == 1
    result = await scripts.run(cluster_redis, "hold", keys.show_keys(1001),
                               [*args, "b1001-00000000000000bb", 60000, 1, far, "A2", "A3"])
    assert result == [0, "A2"]
    assert await scripts.run(cluster_redis, "book", keys.show_keys(1001),
                             [*args, "b1001-00000000000000aa", "A1", "A2"]) >= 2
    # The check is real: keys of two shows in one script are refused.
    mixed = keys.show_keys(1001)[:2] + keys.show_keys(1002)[2:]
    with pytest.raises(ResponseError, match="same slot"):
        await scripts.run(cluster_redis, "hold", mixed,
                          [*args, "b1001-00000000000000cc", 60000, 1, far, "B1"])
