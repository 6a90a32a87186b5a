"""A cross-region booking flow as a client on one host runs it, with its latencies.

    python -m tests.integration.cluster.multihost_flow --topology T --run-dir D \
        --entry south --home north --count 20

Each of `count` users holds two seats of a show whose theatre lives in `home`, at
a node of `entry` (which forwards the write home), pays at the gateway and
confirms at the same node. Prints one JSON line: how many sold and the hold and
confirm latencies (ms, p50/p99). With `--until-writable-since T` it instead holds
single seats until one works and prints how long after T that was (a failover).
Run as a separate process so that the multi-host test can run it inside a network
namespace (`ip netns exec`): the hosts' addresses are reachable only from there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bookcluster.node.auth import mint
from bookcluster.topology.load import load_topology
from bookcluster.topology.model import Topology

DEADLINE_S = 90.0  # the whole flow, however many users


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


async def _json(session: aiohttp.ClientSession, method: str, url: str,
                **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
    async with session.request(method, url, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None), dict(resp.headers)


async def home_show(session: aiohttp.ClientSession, node: str, home: str) -> int:
    """A show of a theatre whose home is `home`, found through `node`'s catalog."""
    status, theatres, _ = await _json(session, "GET", f"{node}/theatres?region={home}")
    assert status == 200 and theatres, theatres
    first = theatres[0] if isinstance(theatres, list) else theatres["theatres"][0]
    status, body, _ = await _json(session, "GET", f"{node}/theatres/{first['id']}/shows")
    assert status == 200, body
    return int(body["shows"][0]["id"])


async def free_seats(session: aiohttp.ClientSession, node: str, show: int,
                     consistent: bool = True) -> list[str]:
    """Seats available now (home master), or as the node's region last saw them (a read
    that works while the home master fails over)."""
    query = "?consistent=true" if consistent else ""
    status, body, _ = await _json(session, "GET", f"{node}/shows/{show}/seats{query}")
    assert status == 200, body
    return [s["seat_id"] for s in body["seats"] if s["status"] == "AVAILABLE"]


async def captured(session: aiohttp.ClientSession, topology: Topology,
                   booking: dict[str, Any]) -> str:
    assert topology.payments is not None
    base = f"http://{topology.payments.gateway}"
    headers = {"Authorization": f"Bearer {topology.secrets.get('gateway_api_key')}"}
    body = {"booking_id": booking["booking_id"], "region": booking["region"],
            "amount_paise": booking["amount_paise"], "capture_delay_ms": 0,
            "outcome": "capture", "webhook": False}
    status, intent, _ = await _json(session, "POST", f"{base}/intents", json=body,
                                    headers=headers)
    assert status == 201, intent
    for _ in range(200):
        _, state, _ = await _json(session, "GET", f"{base}/intents/{intent['id']}",
                                  headers=headers)
        if state["status"] == "CAPTURED":
            return str(intent["id"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"payment {intent['id']} was not captured")


async def run(topology: Topology, entry: str, home: str, count: int) -> dict[str, Any]:
    node = f"http://{topology.region(entry).nodes[0]}"
    holds: list[float] = []
    confirms: list[float] = []
    home_regions: set[str] = set()
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        show = await home_show(session, node, home)
        seats = await free_seats(session, node, show)
        assert len(seats) >= 2 * count, f"show {show}: only {len(seats)} free seats"
        for i in range(count):
            if time.monotonic() - started > DEADLINE_S:
                break
            user = f"multihost-{int(started)}-{i}"
            auth = {"Authorization": f"Bearer {mint(topology, user, 600, ())}"}
            began = time.monotonic()
            status, booking, headers = await _json(
                session, "POST", f"{node}/booking/seats/{show}/lock", headers=auth,
                json={"seat_ids": seats[2 * i:2 * i + 2]})
            holds.append((time.monotonic() - began) * 1000)
            assert status == 201, booking
            home_regions.add(headers.get("X-Bookcluster-Home-Region", "?"))
            payment = await captured(session, topology, booking)
            began = time.monotonic()
            status, body, _ = await _json(
                session, "POST", f"{node}/booking/booking/{booking['booking_id']}/confirm",
                headers={**auth, "Idempotency-Key": f"confirm-{payment}"},
                json={"payment_id": payment})
            confirms.append((time.monotonic() - began) * 1000)
            assert status == 200 and body["status"] == "CONFIRMED", body
    return {"sold": len(confirms), "show": show, "home_regions": sorted(home_regions),
            "hold_ms": {"p50": round(statistics.median(holds), 1),
                        "p99": round(percentile(holds, 0.99), 1)},
            "confirm_ms": {"p50": round(statistics.median(confirms), 1),
                           "p99": round(percentile(confirms, 0.99), 1)}}


async def until_writable(topology: Topology, entry: str, home: str, since: float) -> dict[str, Any]:
    """Hold one seat of a `home` show at an `entry` node, again and again, until it works:
    how long after `since` (wall clock, when the test broke something) that was."""
    node = f"http://{topology.region(entry).nodes[0]}"
    statuses: dict[str, int] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        show = await home_show(session, node, home)
        seats: list[str] = []
        while not seats:  # a seat map read may be refused for a moment too (counted)
            try:
                seats = await free_seats(session, node, show, consistent=False)
            except AssertionError:
                statuses["seat map refused"] = statuses.get("seat map refused", 0) + 1
                if time.time() - since > DEADLINE_S:
                    raise
                await asyncio.sleep(0.2)
        for i, seat in enumerate(seats):
            if time.time() - since > DEADLINE_S:
                break
            auth = {"Authorization": f"Bearer {mint(topology, f'probe-{since}-{i}', 600, ())}"}
            try:
                status, _, _ = await _json(session, "POST", f"{node}/booking/seats/{show}/lock",
                                           headers=auth, json={"seat_ids": [seat]})
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, key = 0, type(exc).__name__
            else:
                key = str(status)
            statuses[key] = statuses.get(key, 0) + 1
            if status == 201:
                return {"writable_after_s": round(time.time() - since, 2), "statuses": statuses}
            await asyncio.sleep(0.1)
    return {"writable_after_s": None, "statuses": statuses}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--topology", type=Path, required=True)
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--entry", required=True)
    p.add_argument("--home", required=True)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--until-writable-since", type=float, default=None,
                   help="instead: hold single seats until one works; seconds since this "
                   "wall-clock time")
    args = p.parse_args()
    topology = load_topology(args.topology, args.run_dir.resolve())
    if args.until_writable_since is not None:
        result = asyncio.run(until_writable(topology, args.entry, args.home,
                                            args.until_writable_since))
    else:
        result = asyncio.run(run(topology, args.entry, args.home, args.count))
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
