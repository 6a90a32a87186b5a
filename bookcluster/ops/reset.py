"""Put every show's seats back to their seeded state and drop all bookings.

For tests and demos. Each touched show gets a new version and a RESET message
on its master's channel, so node caches drop what they held.
"""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg

from bookcluster.booking.onsales import GUARD_REFRESH_S
from bookcluster.seats import keys
from bookcluster.stores import jobqueue
from bookcluster.stores.connections import PG_TOOL_SESSION, connect_primary, make_master
from bookcluster.topology.model import Topology

# TRUNCATE locks its tables in list order; this is the order in which the
# running services lock them (jobs: ticket/notification/payment_event before
# booking; sweeper and confirm: booking before the rest), so it cannot deadlock.
BOOKING_TABLES = ("payment_event, ticket, notification, booking, booking_seat, payment, "
                  "outbox, idempotency, mirror_change, checkin_scan")
# On-sales (`bookcluster/booking/onsales.py`), dropped before the booking tables: the
# admitter locks an on-sale's row, then reads seats and bookings.
ONSALE_TABLES = "onsale_pass_use, onsale_admit, onsale_join, onsale_show, onsale"
ATTEMPTS = 3


async def reset_region(topology: Topology, region: str) -> int:
    """Returns how many on-sales it dropped."""
    dropped = 0
    for attempt in range(ATTEMPTS):
        try:
            dropped = await _reset_postgres(topology, region)
            break
        except asyncpg.DeadlockDetectedError:  # a lock order we did not foresee: go again
            if attempt == ATTEMPTS - 1:
                raise
    await _reset_redis(topology, region)
    return dropped


async def _reset_postgres(topology: Topology, region: str) -> int:
    # No lock timeout: TRUNCATE waits for the nodes' transactions to end.
    conn = await connect_primary(topology.region(region).pg_members, topology.secrets,
                                 server_settings=PG_TOOL_SESSION)
    try:
        # Let jobs in flight finish (a few seconds at most); the TRUNCATE drops every
        # job, dead letters too (the outbox is the queue).
        for _ in range(50):
            if not (await jobqueue.counts(conn))["active"]:
                break
            await asyncio.sleep(0.1)
        async with conn.transaction():
            dropped = int(await conn.fetchval("SELECT count(*) FROM onsale"))
            await conn.execute(f"TRUNCATE {ONSALE_TABLES}")
            await conn.execute(f"TRUNCATE {BOOKING_TABLES}")
            await conn.execute(
                "UPDATE show_seat SET status = 'AVAILABLE', hold_booking_id = NULL, "
                "hold_expires_at = NULL, booked_booking_id = NULL, updated_at = now() "
                "WHERE status IN ('LOCKED', 'BOOKED') OR hold_booking_id IS NOT NULL")
        return dropped
    finally:
        await conn.close()


async def _reset_redis(topology: Topology, region: str) -> None:
    redis = make_master(topology, region, near=region, timeout_s=10.0)
    try:
        onsale_keys = [keys.ONSALES]
        async for key in redis.scan_iter(match="{onsale:*}:*", count=1000):
            onsale_keys.append(key)
        await redis.delete(*onsale_keys)
        shows = set()
        for pattern in ("{show:*}:holds", "{show:*}:booked"):
            async for key in redis.scan_iter(match=pattern, count=1000):
                shows.add(int(key.split("}")[0].removeprefix("{show:")))
        for show in sorted(shows):
            await redis.delete(keys.show_holds(show), keys.show_booked(show))
            version = await redis.incr(keys.show_version(show))
            await redis.publish(keys.SEAT_CHANGES_CHANNEL, json.dumps(
                {"show": show, "version": version, "status": "RESET", "seats": [],
                 "ts": int(time.time() * 1000)}))
    finally:
        await redis.aclose()


async def reset_cluster(topology: Topology) -> None:
    dropped = 0
    for region in topology.regions:
        dropped += await reset_region(topology, region)
    if dropped:  # nodes re-read their on-sale lists in the background: let them see it
        await asyncio.sleep(GUARD_REFRESH_S)
