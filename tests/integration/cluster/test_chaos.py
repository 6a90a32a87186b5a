"""The chaos soak: shoppers book in three regions (every node, forwards across regions,
the payment saga racing the confirm) while faults are injected one after another:
SIGKILL and SIGSTOP of nodes, workers, Redis masters, PostgreSQL primaries and
sentinels; cross-region links cut (blackholed or reset) or slowed through the WAN
proxy. Each is healed before the next (a killed PostgreSQL primary recovers in the
background).

What must hold at the end, once everything is healed: double_sold = 0 (no seat in two
CONFIRMED bookings), lost_ack = 0 (every confirm answered 200 is CONFIRMED), lying_fail
= 0 (no definite 4xx for a booking that ended CONFIRMED), every confirm got a definite
answer, no 5xx but 503, money conserved (every captured payment ended as this booking's
sale or a refund at the gateway) and the audit clean (Redis and every node's cache
equal PostgreSQL). The figures are printed (`-s`).

A short run (a few faults, a few hundred confirms) is in the suite; the long one
(`-m slow`: at least 20,000 confirms under at least 60 faults) takes about half an
hour on a shared two-core machine.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bookcluster.local.launcher import LocalCluster
from bookcluster.ops.audit import run_audit
from bookcluster.ops.demo_catalog import CatalogSpec, build_catalog
from bookcluster.stores.connections import PG_TOOL_SESSION, connect_primary
from bookcluster.topology.load import load_topology
from bookcluster.topology.model import Topology
from bookcluster.topology.placement import Placement
from tests.integration.cluster.chaos import Chaos, Flow, Shoppers
from tests.integration.support import topology_yaml

REGIONS = ("north", "south", "west")
LIMITS = """\
  user_writes: {per_second: 100000, burst: 100000}
  ip_writes: {per_second: 100000, burst: 100000}
  ip_reads: {per_second: 100000, burst: 100000}
"""
BASE_DELAY_MS = 2  # one way, every cross-region link (the proxy must be there to cut)
GAP_S = 2.0  # between two faults
SETTLE_AUDIT_S = 120.0  # for webhooks, refunds and repairs after the last fault
ARTEFACTS = Path(os.environ.get("BOOKCLUSTER_ARTEFACTS", Path(__file__).resolve().parents[3]
                                / ".artefacts")) / "chaos"


@dataclass(frozen=True)
class Plan:
    catalog: CatalogSpec
    confirms: int
    faults: int
    shoppers: int
    kinds: tuple[str, ...] | None = None  # None: any, at random
    seed: int = 12
    max_s: float = 3600.0


async def pg_rows(topology: Topology, region: str, query: str, *args: Any) -> list[Any]:
    conn = await connect_primary(topology.region(region).pg_members, topology.secrets,
                                 server_settings=PG_TOOL_SESSION)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


def seat_pools(topology: Topology, spec: CatalogSpec,
               rng: random.Random) -> dict[str, dict[int, list[str]]]:
    catalog = build_catalog(spec, date.today())
    placement = Placement(topology)
    theatre_of = catalog.theatre_of_screen()
    pools: dict[str, dict[int, list[str]]] = {r: {} for r in topology.regions}
    for show in catalog.shows:
        seats = [s.seat_id for s in catalog.seats
                 if s.screen_id == show.screen_id and not s.blocked]
        rng.shuffle(seats)
        pools[placement.region_of(theatre_of[show.screen_id])][show.id] = seats
    return pools


async def soak(plan: Plan) -> None:
    """Run the plan on a cluster of its own and check it; on a failure the cluster's logs
    are kept under `.artefacts/chaos/` (or `$BOOKCLUSTER_ARTEFACTS/chaos/`)."""
    rng = random.Random(plan.seed)
    with tempfile.TemporaryDirectory(prefix="bookcluster-chaos-") as tmp:
        Path(tmp).chmod(0o755)  # PostgreSQL's unprivileged user must reach its data
        path = Path(tmp) / "topology.yaml"
        path.write_text(topology_yaml(Path(tmp) / "run", regions=REGIONS, nodes=2,
                                      standby=REGIONS, workers=True, limits=LIMITS,
                                      redis_down_after="1s"))
        topology = load_topology(path)
        launcher = LocalCluster(topology, catalog=plan.catalog, wan_delay_ms=BASE_DELAY_MS,
                                progress=lambda _: None)
        await launcher.start()
        try:
            check(await _run(plan, launcher, rng), plan)
        except Exception:
            kept = ARTEFACTS / time.strftime("%Y%m%d-%H%M%S")
            shutil.copytree(topology.settings.run_dir / "logs", kept)
            print(f"logs kept in {kept}")
            raise
        finally:
            launcher.stop()


async def _run(plan: Plan, launcher: LocalCluster, rng: random.Random) -> dict[str, Any]:
    topology = launcher.topology
    assert launcher.wan is not None
    wan = f"http://127.0.0.1:{launcher.wan.control_port}"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        shoppers = Shoppers(topology, seat_pools(topology, plan.catalog, rng), http, rng)
        chaos = Chaos(launcher, http, rng, wan, BASE_DELAY_MS)
        started = time.monotonic()
        tasks = [asyncio.create_task(shoppers.shop(f"s{i}", 10 ** 9))
                 for i in range(plan.shoppers)]
        try:
            while shoppers.confirmed < plan.confirms or \
                    sum(chaos.injected.values()) < plan.faults:
                assert time.monotonic() - started < plan.max_s, (
                    shoppers.confirmed, chaos.injected)
                assert not all(t.done() for t in tasks), "every shopper stopped (sold out?)"
                await asyncio.sleep(GAP_S)
                done = sum(chaos.injected.values())
                if done < plan.faults:
                    kind = plan.kinds[done % len(plan.kinds)] if plan.kinds else None
                    await chaos.inject(kind)
                    print(f"{time.monotonic() - started:7.1f} s  {shoppers.confirmed:6d} "
                          f"confirmed  {chaos.log[-1]}", flush=True)  # progress, with -s
        finally:
            shoppers.stop.set()
            await asyncio.gather(*tasks)
            await chaos.settle()
        elapsed = time.monotonic() - started
        figures = await _outcomes(topology, shoppers.flows, shoppers)
    figures.update(seconds=round(elapsed, 1), faults=sum(chaos.injected.values()),
                   by_kind=dict(chaos.injected), statuses=dict(shoppers.statuses),
                   server_errors=shoppers.server_errors[:5],
                   restarts_failed=chaos.restarts_failed,
                   confirms_per_s=round(figures["confirmed"] / elapsed, 1), log=chaos.log)
    return figures


async def _outcomes(topology: Topology, flows: list[Flow],
                    shoppers: Shoppers) -> dict[str, Any]:
    """The invariants, from what the shoppers were told and what the stores hold."""
    booked = [f for f in flows if f.booking is not None]
    final: dict[str, Any] = {}
    for region in topology.regions:
        ids = [f.booking for f in booked if f.region == region]
        for r in await pg_rows(topology, region, "SELECT id, status, payment_id FROM booking "
                               "WHERE id = ANY($1::text[])", ids):
            final[r["id"]] = (r["status"], r["payment_id"])
    lost_ack = [f.booking for f in booked if any(
        s == 200 and isinstance(b, dict) and b.get("status") == "CONFIRMED"
        for s, b in f.confirms) and final.get(f.booking, ("?",))[0] != "CONFIRMED"]
    lying = [f.booking for f in booked if any(400 <= s < 500 for s, _ in f.confirms)
             and final.get(f.booking, ("?",))[0] == "CONFIRMED"]
    undecided = [f.booking for f in booked
                 if not f.confirms or f.confirms[-1][0] in (0, 503, 429)]
    double_sold = 0
    for region in topology.regions:
        double_sold += len(await pg_rows(
            topology, region, "SELECT bs.show_id, bs.seat_id FROM booking_seat bs "
            "JOIN booking b ON b.id = bs.booking_id AND b.status = 'CONFIRMED' "
            "GROUP BY bs.show_id, bs.seat_id HAVING count(*) > 1"))
    report, unsettled = await _audit_and_money(topology, booked, final, shoppers)
    return {"confirmed": shoppers.confirmed, "bookings": len(booked),
            "lost_ack": len(lost_ack), "lying_fail": len(lying), "undecided": len(undecided),
            "double_sold": double_sold, "money_unsettled": unsettled,
            "audit_exit": report.exit_code,
            "audit": [str(v) for v in report.violations[:5]] + list(report.unreachable),
            "examples": {"lost_ack": lost_ack[:3],
                         "lying_fail": [(f.booking, f.confirms) for f in booked
                                        if f.booking in lying[:3]],
                         "undecided": undecided[:3]}}


async def _audit_and_money(topology: Topology, booked: list[Flow], final: dict[str, Any],
                           shoppers: Shoppers) -> tuple[Any, list[str]]:
    """Wait (bounded) until the audit is clean and every captured payment is this
    booking's sale or refunded: webhooks, refunds and repairs finish after the load."""
    deadline = time.monotonic() + SETTLE_AUDIT_S
    while True:
        report = await run_audit(topology)
        unsettled = []
        for flow in booked:
            if final.get(flow.booking) == ("CONFIRMED", flow.payment):
                continue
            status, body, _ = await shoppers.request(
                "GET", f"{shoppers.gateway}/intents/{flow.payment}", headers=shoppers.merchant)
            if not (status == 200 and body["status"] == "REFUNDED"):
                unsettled.append(f"{flow.booking}: {final.get(flow.booking)}, payment "
                                 f"{flow.payment} {body if status != 200 else body['status']}")
        if (report.exit_code == 0 and not unsettled) or time.monotonic() > deadline:
            return report, unsettled
        await asyncio.sleep(2)
        for region in topology.regions:  # bookings the saga or a late confirm changed
            ids = [f.booking for f in booked if f.region == region]
            for r in await pg_rows(topology, region, "SELECT id, status, payment_id "
                                   "FROM booking WHERE id = ANY($1::text[])", ids):
                final[r["id"]] = (r["status"], r["payment_id"])


def check(figures: dict[str, Any], plan: Plan) -> None:
    print("\nchaos soak: " + ", ".join(f"{k}={v}" for k, v in figures.items() if k != "log"))
    print("faults:\n  " + "\n  ".join(figures["log"]))
    server_errors = {k: v for k, v in figures["statuses"].items()
                     if k.split()[-1].startswith("5") and not k.endswith(" 503")}
    assert figures["double_sold"] == 0
    assert figures["lost_ack"] == 0 and figures["lying_fail"] == 0, figures["examples"]
    assert figures["undecided"] == 0, figures["examples"]
    assert server_errors == {}, figures["server_errors"]
    assert figures["money_unsettled"] == [], figures["money_unsettled"][:5]
    assert figures["audit_exit"] == 0, figures["audit"]
    assert figures["confirmed"] >= plan.confirms and figures["faults"] >= plan.faults


SHORT = Plan(CatalogSpec(theatres_per_city=1, cities_per_region=1, days=1, shows_per_day=2),
             confirms=300, faults=6, shoppers=12,
             kinds=("redis_master_kill", "node_kill", "link_cut", "sentinel_stop",
                    "worker_kill", "pg_primary_stop"), max_s=600.0)
LONG = Plan(CatalogSpec(theatres_per_city=1, cities_per_region=3, days=2, shows_per_day=4),
            confirms=20_000, faults=60, shoppers=24)


@pytest.mark.timeout(900)
async def test_chaos_short() -> None:
    await soak(SHORT)


@pytest.mark.slow
@pytest.mark.timeout(4 * 3600)
async def test_chaos_soak() -> None:
    await soak(LONG)

