"""What crossing regions costs: change-to-remote-cache delay and local vs remote latency.

Change delay: a `/shows/{id}/live` WebSocket on a node of every region for a show of
every home region; holds go through the home region, and each delta's arrival is
compared with its `ts` (the home master's clock, ms: same machine, same clock) and
with the moment the hold's 201 arrived (a delta can beat the 201: the master
publishes before PostgreSQL records the hold).

Local vs remote: the same holds, confirms and seat-map reads at low concurrency
through a node of the show's home region and through nodes of other regions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

import aiohttp

from . import loadgen
from .local import BenchCluster
from .phases import Load, report
from .stats import summarize

SNAPSHOT_TIMEOUT_S = 15.0
DRAIN_TIMEOUT_S = 3.0
HOLD_INTERVAL_S = 0.02


async def change_delay(cluster: BenchCluster, http: aiohttp.ClientSession, load: Load,
                       seats: dict[str, tuple[int, list[str]]]) -> dict[str, Any]:
    """`seats`: home region -> (show, free seats to hold one by one)."""
    regions = list(cluster.topology.regions)
    arrivals: dict[tuple[str, str], list[tuple[str, float, float]]] = {
        (h, r): [] for h in regions for r in regions}
    snapshots = {pair: asyncio.Event() for pair in arrivals}
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    readers: list[asyncio.Task[None]] = []

    async def read(pair: tuple[str, str], ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if data.get("type") == "snapshot":
                snapshots[pair].set()
            elif data.get("type") == "delta" and data.get("status") == "LOCKED":
                arrivals[pair].append((str(data.get("booking")), time.time() * 1000,
                                       float(data.get("ts", "nan"))))

    created: dict[str, float] = {}  # booking -> when its 201 arrived (ms)
    sent: dict[str, list[str]] = {h: [] for h in regions}
    try:
        for home in regions:
            show = seats[home][0]
            for reader in regions:
                url = f"{cluster.nodes(reader)[0]}/shows/{show}/live"
                ws = await http.ws_connect(url, heartbeat=None)
                sockets.append(ws)
                readers.append(asyncio.create_task(read((home, reader), ws)))
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in snapshots.values())),
                               SNAPSHOT_TIMEOUT_S)

        async def write(home: str) -> None:
            show, free = seats[home]
            nodes = cluster.nodes(home)
            deadline = time.perf_counter() + load.duration_s
            for k, seat in enumerate(free[: load.live_holds]):
                if time.perf_counter() > deadline:
                    break
                async with http.post(f"{nodes[k % len(nodes)]}/booking/seats/{show}/lock",
                                     json={"user_id": "live", "seat_ids": [seat]}) as resp:
                    body = await resp.json(content_type=None)
                if resp.status == 201:
                    created[body["booking_id"]] = time.time() * 1000
                    sent[home].append(body["booking_id"])
                await asyncio.sleep(HOLD_INTERVAL_S)

        await asyncio.gather(*(write(h) for h in regions))
        deadline = time.perf_counter() + DRAIN_TIMEOUT_S
        while time.perf_counter() < deadline and any(
                len(arrivals[(h, r)]) < len(sent[h]) for h, r in arrivals):
            await asyncio.sleep(0.05)
    finally:
        for ws in sockets:
            await ws.close()
        for task in readers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    pairs: dict[str, Any] = {}
    for (home, reader), got in arrivals.items():
        mine = [a for a in got if a[0] in created]
        pairs[f"{home}->{reader}"] = {
            "home": home, "reader": reader, "expected": len(sent[home]),
            "received": len(mine),
            "from_ts": summarize([arrived - ts for _, arrived, ts in mine]),
            "from_201": summarize([arrived - created[b] for b, arrived, _ in mine])}
    return {"pairs": pairs, "holds_per_home": {h: len(v) for h, v in sent.items()}}


# -- local vs remote ----------------------------------------------------------------------

def _others(cluster: BenchCluster, home: str) -> list[str]:
    return [n for r in cluster.topology.regions if r != home for n in cluster.nodes(r)]


async def _warm(cluster: BenchCluster, http: aiohttp.ClientSession,
                warm: dict[str, list[str]], shows: dict[str, int]) -> None:
    """One hold + confirm per (node, home region): pools and prepared statements exist."""
    async def one(node: str, home: str, seat: str) -> None:
        async with http.post(f"{node}/booking/seats/{shows[home]}/lock",
                             json={"user_id": "warm", "seat_ids": [seat]}) as resp:
            body = await resp.json(content_type=None)
        if resp.status != 201:
            return
        async with http.post(f"{node}/booking/booking/{body['booking_id']}/confirm",
                             json={"payment_id": f"pay-{uuid.uuid4().hex}"},
                             headers={"Idempotency-Key": uuid.uuid4().hex}) as resp:
            await resp.read()

    await asyncio.gather(*(one(node, home, warm[home][i])
                           for home in warm for i, node in enumerate(cluster.nodes())))


async def local_remote(cluster: BenchCluster, http: aiohttp.ClientSession, load: Load,
                       pools: dict[str, dict[str, dict[int, list[str]]]]) -> dict[str, Any]:
    """`pools`: home -> {"local": seats, "remote": seats, "warm": seats} (show -> seats)."""
    regions = list(cluster.topology.regions)
    await _warm(cluster, http, {h: [s for seats in pools[h]["warm"].values() for s in seats]
                                for h in regions},
                {h: next(iter(pools[h]["warm"])) for h in regions})
    base = {"concurrency": load.wan_clients, "duration_s": load.duration_s / 2,
            "max_requests": load.wan_requests, "warm_urls": []}
    timeout = load.duration_s * 3 + 120

    async def run(spec: dict[str, Any]) -> dict[str, Any]:
        return await loadgen.run_processes([{**base, **spec}], timeout)

    out: dict[str, Any] = {}
    made: dict[str, list[list[Any]]] = {}
    for where in ("local", "remote"):
        groups = [{"nodes": _others(cluster, h) if where == "remote" else cluster.nodes(h),
                   "pool": {str(s): seats for s, seats in pools[h][where].items()}}
                  for h in regions]
        result = await run({"kind": "holds", "groups": groups, "user": f"wan-{where}"})
        out[f"hold_{where}"] = report(result, "201")
        made[where] = result["created"]
    for where in ("local", "remote"):
        groups = [{"nodes": _others(cluster, h) if where == "remote" else cluster.nodes(h),
                   "bookings": [b for b, s in made[where] if cluster.home_of(s) == h]}
                  for h in regions]
        out[f"confirm_{where}"] = report(await run({"kind": "confirms", "groups": groups}),
                                         "200")
    # Reads of a show homed in another region, from nodes of the reader's own region.
    readers: list[list[str]] = []
    for i, reader in enumerate(regions):
        show = next(iter(pools[regions[(i + 1) % len(regions)]]["warm"]))
        urls = [f"{n}/shows/{show}/seats" for n in cluster.nodes(reader)]
        for url in urls:
            async with http.get(url) as resp:
                await resp.read()
        readers.append(urls)
    out["read_local"] = report(await run({"kind": "gets", "groups": readers}), "200")
    return out
