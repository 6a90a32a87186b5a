"""The region's sweeper: expiry keeps its pace behind a backlog of old idempotency keys."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from bookcluster.stores.connections import PG_TOOL_SESSION, connect_primary
from tests.integration.conftest import SHORT_TTL_S, Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_holds import hold
from tests.integration.support import call

OLD_KEYS = 200_000


async def test_old_keys_do_not_stall_expiry(clean: Cluster, http: aiohttp.ClientSession,
                                            catalog: Any) -> None:
    """200,000 keys past retention, one of them locked by another session: holds still
    expire on time (the cleanup runs in its own bounded statements that skip locked
    rows, not in the expiry transaction), and the keys all go.

    The lock stands in for a delete too slow for the expiry's deadline: here an
    unbounded DELETE of 200,000 keys takes ~0.1 s, while a production backlog on
    slower disks took longer than the 1.2 s the expiry transaction has."""
    tool = await connect_primary(clean.topology.region("north").pg_members,
                                 clean.topology.secrets, server_settings=PG_TOOL_SESSION)
    try:
        await tool.execute(
            "INSERT INTO idempotency (user_id, key, request_hash, status_code, response_body, "
            "created_at) SELECT 'old' || g, 'k', 'h', 200, '{}', now() - interval '2 days' "
            "FROM generate_series(1, $1::int) g", OLD_KEYS)
        await tool.execute(
            "INSERT INTO idempotency (user_id, key, request_hash, status_code, response_body) "
            "VALUES ('recent', 'k', 'h', 200, '{}')")
        locked = tool.transaction()
        await locked.start()
        await tool.execute("SELECT 1 FROM idempotency WHERE user_id = 'old1' FOR UPDATE")
        started = time.monotonic()
        show = shows_in(clean, catalog, "north")[0]
        seats = seats_of(catalog, show, 2)
        status, held = await hold(http, clean.short_ttl_node, show, "alice", seats)
        assert status == 201, held
        for _ in range(100):
            _, body = await call(http, "GET",
                                 f"{clean.node('north')}/booking/booking/{held['booking_id']}")
            if body["status"] == "EXPIRED":
                break
            await asyncio.sleep(0.1)
        expired_after = time.monotonic() - started
        assert body["status"] == "EXPIRED"
        assert expired_after <= SHORT_TTL_S + clean.topology.settings.sweep_interval_s + 2.0
        await locked.rollback()
    finally:
        await tool.close()

    async def remaining() -> int:
        rows = await clean.fetch("north", "SELECT count(*) AS n FROM idempotency "
                                 "WHERE user_id LIKE 'old%'")
        return int(rows[0]["n"])

    for _ in range(300):
        if await remaining() == 0:
            break
        await asyncio.sleep(0.1)
    drained_after = time.monotonic() - started
    assert await remaining() == 0
    assert await clean.fetch("north", "SELECT 1 FROM idempotency WHERE user_id = 'recent'")
    print(f"{OLD_KEYS} old keys: a {SHORT_TTL_S} s hold expired after {expired_after:.2f} s; "
          f"all old keys deleted after {drained_after:.1f} s")
