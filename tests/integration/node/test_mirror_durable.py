"""A durable master (`durable: true`, AOF fsynced every second) SIGKILLed while clients
hold and confirm through every region, restarted from its append-only file minus its
last second, as a crash of the machine would leave it (the kernel had not written
those pages yet). Its versions go back; every node's seat map must still equal
PostgreSQL within 5 s of its return, the audit (node caches included) be clean, and
no hold be granted on a seat PostgreSQL shows BOOKED.

A dedicated cluster (one node per region, a small catalog, the session cluster's
masters keep no AOF): about 15 s to start. One crash runs in the suite; the `slow`
variant crashes the master three times in a row under more clients.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from bookcluster.local import faults
from bookcluster.ops.audit import run_audit
from bookcluster.ops.demo_catalog import CITIES, CatalogSpec, build_catalog, slug
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_holds import confirm, hold
from tests.integration.node.test_mirror import CONVERGE_S, converged
from tests.integration.own_cluster import own_cluster

REGION = "west"
SPEC = CatalogSpec(theatres_per_city=1, cities_per_region=1, days=1, shows_per_day=2)
LOST_S = 1.0  # what `appendfsync everysec` may lose in a crash
POOL = 50  # seats each crash's clients hold (the first two shows have 180 sellable)


@pytest_asyncio.fixture(scope="module")
async def durable() -> AsyncIterator[Cluster]:
    theatres = {f"{slug(cities[0][0])}-01": region for region, cities in CITIES.items()}
    async with own_cluster("bookcluster-durable-", SPEC, nodes=1, durable=True, workers=True,
                           theatres=theatres,
                           extra_settings="  sweep_interval: 500ms\n") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def small_catalog() -> Any:
    return build_catalog(SPEC, date.today())


def aof_file(cluster: Cluster) -> Path:
    """The master's append-only file (Redis 6: one file; 7: the newest incremental one)."""
    data = cluster.topology.settings.run_dir / REGION / "redis-master"
    single = data / "appendonly.aof"
    if single.exists():
        return single
    return max((data / "appendonlydir").glob("*.incr.aof"), key=lambda p: p.stat().st_mtime)


async def crash_and_return(cluster: Cluster, http: aiohttp.ClientSession, catalog: Any,
                           customers: int, load_s: float, crash: int) -> tuple[float, int]:
    """Clients hold and confirm on two of the region's shows through every node while
    readers keep both in every node's cache; the master is SIGKILLed, loses its last
    second and comes back. Clients of the busy show go on for a second; the quiet show
    gets a single hold right away: its version on the master is now below what nodes
    cached, so without a new generation nodes would take that change for an old one.
    Returns (seconds from the master's return until every node equals PostgreSQL,
    bytes of AOF lost)."""
    busy, quiet = shows_in(cluster, catalog, REGION)[:2]
    nodes = cluster.nodes()
    stop = {busy: asyncio.Event(), quiet: asyncio.Event()}
    outcomes: list[int] = []

    async def customer(i: int, show: int) -> None:
        seat_pool = seats_of(catalog, show)[crash * POOL:(crash + 1) * POOL]  # free ones
        n = 0
        while not stop[show].is_set() and n < 400:
            user = f"d{crash}-{i}-{n}"
            status, body = await hold(http, nodes[(i + n) % len(nodes)], show, user,
                                      [seat_pool[(i * 7 + n) % len(seat_pool)]])
            outcomes.append(status)
            if status == 201 and n % 2 == 0:
                await confirm(http, nodes[n % len(nodes)], body["booking_id"], f"k{n}", "p")
            n += 1
            await asyncio.sleep(0.05)

    async def reader() -> None:  # seat-map readers keep both shows in every node's cache
        while not stop[busy].is_set():
            for node in nodes:
                for show in (busy, quiet):
                    async with http.get(f"{node}/shows/{show}/seats") as resp:
                        assert resp.status in (200, 503), await resp.text()
            await asyncio.sleep(0.1)

    aof = aof_file(cluster)
    sizes: list[tuple[float, int]] = []

    async def watch_aof() -> None:  # what the file held a second before the crash
        while not stop[quiet].is_set():
            sizes.append((time.monotonic(), aof.stat().st_size))
            await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(customer(i, (busy, quiet)[i % 2])) for i in range(customers)]
    tasks += [asyncio.create_task(reader()), asyncio.create_task(watch_aof())]
    try:
        await asyncio.sleep(load_s)
        name = f"{REGION}.redis.master"
        faults.signal_tree(cluster.launcher.child(name).pid, signal.SIGKILL)
        killed = time.monotonic()
        stop[quiet].set()
        synced = max(size for at, size in sizes if at <= killed - LOST_S)
        await asyncio.sleep(0.3)  # the process is gone and the file complete
        lost = aof.stat().st_size - synced
        os.truncate(aof, synced)
        await cluster.launcher.restart(name)
        returned = time.monotonic()
        for _ in range(40):  # a node may answer 503 until it reconnects
            status, probe = await hold(http, nodes[0], quiet, f"probe{crash}",
                                       [seats_of(catalog, quiet)[-1 - crash]])
            if status != 503:
                break
            await asyncio.sleep(0.05)
        assert status == 201, probe
        await asyncio.sleep(1.0)  # clients of the busy show go on against the new master
    finally:
        for event in stop.values():
            event.set()
        await asyncio.gather(*tasks)
    assert set(outcomes) <= {201, 409, 503}, outcomes
    assert outcomes.count(201) > 0
    waited = await converged(cluster, http, REGION, shows_in(cluster, catalog, REGION))
    took = time.monotonic() - returned
    print(f"crash {crash + 1}: {REGION}'s durable master lost the last {LOST_S:g} s of its "
          f"AOF ({lost} bytes); every node equals PostgreSQL {took:.2f} s after its return "
          f"(clients went on for 1 s; {waited:.2f} s spent polling once they stopped)")
    return took, lost


async def no_hold_on_a_sold_seat(cluster: Cluster) -> None:
    doubles = await cluster.fetch(
        REGION, "SELECT sold.show_id, sold.seat_id FROM booking_seat sold "
        "JOIN booking sb ON sb.id = sold.booking_id AND sb.status = 'CONFIRMED' "
        "JOIN booking_seat other ON other.show_id = sold.show_id "
        "AND other.seat_id = sold.seat_id AND other.booking_id <> sold.booking_id "
        "JOIN booking ob ON ob.id = other.booking_id WHERE ob.created_at > sb.updated_at")
    assert not doubles


@pytest.mark.parametrize(("crashes", "customers", "load_s"), [
    pytest.param(1, 6, 2.0, id="once"),
    pytest.param(3, 12, 4.0, id="three-times", marks=pytest.mark.slow),
])
@pytest.mark.timeout(300)
async def test_a_durable_master_that_lost_its_last_second_is_repaired(
        durable: Cluster, http: aiohttp.ClientSession, small_catalog: Any, crashes: int,
        customers: int, load_s: float) -> None:
    for crash in range(crashes):
        took, lost = await crash_and_return(durable, http, small_catalog, customers, load_s,
                                            crash)
        assert lost > 0  # it really lost writes
        assert took <= CONVERGE_S
        await no_hold_on_a_sold_seat(durable)
        report = await run_audit(durable.topology, grace_s=5.0)
        assert not report.violations and not report.unreachable, report.violations[:5]
        assert sum(report.node_caches.values()) >= 2 * len(durable.nodes())
