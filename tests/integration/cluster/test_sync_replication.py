"""A 200 means replicated: no confirm answers 200 for a sale its region's synchronous
standby has not flushed, with real processes (a cluster of the module's own: north,
a PostgreSQL pair under Patroni, two nodes).

The standby is frozen (SIGSTOP of its whole member: Patroni and PostgreSQL) while
bookings are confirmed: each commit waits for it until the node's deadline cancels
the wait, which leaves the sale committed on the primary ("committed locally, but
might not have been replicated"); a 503 `unknown`. The same key's retry then finds
the stored answer, and must not replay its 200. Then the link is cut and the
primary killed: the standby's WAL receiver is SIGKILLed while frozen, so the WAL
the primary sent meanwhile (still in its socket) never arrives, as with a cut
network; the standby wakes and Patroni promotes it. Every 200 must be CONFIRMED on
the new leader (lost acknowledgements 0).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from bookcluster.local import faults, patroni
from bookcluster.ops.demo_catalog import CatalogSpec, build_catalog
from tests.integration.cluster.test_failover import HA, LIMITS, Booking, bearer, fetch, prepare
from tests.integration.own_cluster import own_cluster

CATALOG = CatalogSpec(theatres_per_city=1, cities_per_region=1, days=1, shows_per_day=1)
BEFORE = 4  # confirmed with the standby healthy: 200, replicated
FROZEN = 8  # confirmed while it is frozen


@pytest_asyncio.fixture(scope="module")
async def ha() -> AsyncIterator[HA]:
    async with own_cluster("bookcluster-syncrep-", CATALOG, regions=("north",), nodes=2,
                           standby=("north",), payments=True, limits=LIMITS) as cluster:
        region = cluster.topology.region("north")
        yield HA(cluster.launcher, cluster.topology, region, cluster.nodes("north"),
                 build_catalog(CATALOG, date.today()))


async def confirm(http: aiohttp.ClientSession, ha: HA, booking: Booking, node: int) -> None:
    url = f"{ha.nodes[node % 2]}/booking/booking/{booking.booking_id}/confirm"
    headers = {**bearer(ha, booking.user), "Idempotency-Key": f"k-{booking.booking_id}"}
    async with http.post(url, json={"payment_id": booking.payment_id},
                         headers=headers) as resp:
        booking.answers.append((0.0, 0.0, resp.status, await resp.json(content_type=None)))


def wal_receivers(pid: int) -> list[int]:
    """The WAL receiver processes in a process tree (PostgreSQL sets its title)."""
    found = []
    for member in faults.process_tree(pid):
        try:
            title = Path(f"/proc/{member}/cmdline").read_bytes()
        except OSError:
            continue
        if b"walreceiver" in title:
            found.append(member)
    return found


@pytest.mark.timeout(240)
async def test_no_200_for_a_sale_the_standby_never_flushed(ha: HA) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        bookings = await prepare(http, ha, BEFORE + FROZEN, "syncrep")
        await ha.wait_sync_standby()
        primary = await ha.leader_process()
        [standby] = [patroni.process_name(ha.region, i) for i in range(2)
                     if patroni.process_name(ha.region, i) != primary]
        healthy, frozen = bookings[:BEFORE], bookings[BEFORE:]
        for i, booking in enumerate(healthy):
            await confirm(http, ha, booking, i)
            assert booking.answers[-1][2] == 200, booking.answers[-1]

        standby_pid = ha.launcher.child(standby).pid
        faults.signal_tree(standby_pid, signal.SIGSTOP)
        try:
            for _ in range(2):  # the first try, then the same key's retry
                for start in range(0, FROZEN, 4):  # within the nodes' PostgreSQL pools
                    await asyncio.gather(*(confirm(http, ha, b, i)
                                           for i, b in enumerate(frozen[start:start + 4])))
            faults.signal_tree(ha.launcher.child(primary).pid, signal.SIGKILL)
            receivers = wal_receivers(standby_pid)
            for pid in receivers:  # what it has not read of its socket is gone
                os.kill(pid, signal.SIGKILL)
        finally:
            faults.signal_tree(standby_pid, signal.SIGCONT)
    assert receivers, "no WAL receiver in the standby's process tree"
    await ha.wait_member(standby, ("primary",), timeout_s=90)

    rows = await fetch(ha, "SELECT id, status FROM booking WHERE id = ANY($1::text[])",
                       [b.booking_id for b in bookings])
    final = {r["id"]: r["status"] for r in rows}
    acknowledged = [b for b in bookings if any(a[2] == 200 for a in b.answers)]
    lost = [b.booking_id for b in acknowledged if final.get(b.booking_id) != "CONFIRMED"]
    print(f"\nstandby frozen: answers {[a[2] for b in frozen for a in b.answers]}; "
          f"{len(acknowledged)} acknowledged, lost after the failover: {len(lost)}")
    assert lost == []
    # The cut mattered: the frozen window's sales were committed on the old primary only.
    assert not any(final.get(b.booking_id) == "CONFIRMED" for b in frozen), final
    # And every answer meanwhile said what is known: unknown, not sold, not refused.
    for booking in frozen:
        for _, _, status, body in booking.answers:
            assert status == 503 and body["outcome"] == "unknown", body

    # Those sales were lost with the old primary: the same key sells afresh on the new
    # one, which runs alone (no 200: 503 unknown), and answers 200 once the old member,
    # started again, is its synchronous standby.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await asyncio.gather(*(confirm(http, ha, b, i) for i, b in enumerate(frozen[:4])))
        await ha.launcher.restart(primary)
        await ha.wait_sync_standby()
        for i, booking in enumerate(frozen):
            await confirm(http, ha, booking, i)
    alone = [b.answers[-2] for b in frozen[:4]]
    assert all(a[2] == 503 and a[3]["outcome"] == "unknown" for a in alone), alone
    assert [b.answers[-1][2] for b in frozen] == [200] * FROZEN, [b.answers[-1] for b in frozen]
    rows = await fetch(ha, "SELECT id, status FROM booking WHERE id = ANY($1::text[])",
                       [b.booking_id for b in bookings])
    assert {r["status"] for r in rows} == {"CONFIRMED"}, rows
