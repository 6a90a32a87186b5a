"""What crossing regions costs: change-to-remote-cache delay and local vs remote latency.

Change delay: a `/shows/{id}/live` WebSocket on a node of every region for a show of
every home region; holds of one seat each go through the home region, and each
delta's arrival is compared with its `ts` (the home master's clock, ms: same
machine, same clock) and with the moment the hold's 201 arrived (a delta can beat
the 201: the master publishes before PostgreSQL records the hold). Deltas carry
seat statuses only, no booking ids: a delta is matched to its hold by show and seat.
A socket that is sent a fresh snapshot instead (the reconciler's RESET of a show,
e.g. when a replica link came back, or a gap in versions) learns the holds from it:
those are counted as `via_snapshot`, not lost.

Local vs remote: the same holds, confirms and seat-map reads at low concurrency
through a node of the show's home region and through nodes of other regions.
Every hold is by a fresh user with its own token; confirms use captured payments.
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
from .payments import Held, held, pay
from .phases import Load, report
from .stats import summarize
from .tokens import bearer, token_for

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

    resynced: dict[tuple[str, str], set[str]] = {pair: set() for pair in arrivals}

    async def read(pair: tuple[str, str], ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if data.get("type") == "snapshot":
                if snapshots[pair].is_set():  # a RESET (e.g. the reconciler's) or a gap
                    resynced[pair].update(f"{data.get('show_id')}/{seat['seat_id']}"
                                          for seat in data.get("seats") or []
                                          if seat.get("status") == "LOCKED")
                snapshots[pair].set()
            elif data.get("type") == "delta" and data.get("status") == "LOCKED":
                arrived = time.time() * 1000
                arrivals[pair] += [(f"{data.get('show_id')}/{seat}", arrived,
                                    float(data.get("ts", "nan")))
                                   for seat in data.get("seats") or []]

    created: dict[str, float] = {}  # "show/seat" -> when its hold's 201 arrived (ms)
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
            tokens = [token_for(cluster.topology, f"live-{home}-{k}")
                      for k in range(min(len(free), load.live_holds))]
            for k, seat in enumerate(free[: load.live_holds]):
                if time.perf_counter() > deadline:
                    break
                async with http.post(f"{nodes[k % len(nodes)]}/booking/seats/{show}/lock",
                                     json={"seat_ids": [seat]},
                                     headers=bearer(tokens[k])) as resp:
                    await resp.read()
                if resp.status == 201:
                    created[f"{show}/{seat}"] = time.time() * 1000
                    sent[home].append(f"{show}/{seat}")
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
        seen = {a[0] for a in mine}
        pairs[f"{home}->{reader}"] = {
            "home": home, "reader": reader, "expected": len(sent[home]),
            "received": len(mine),
            # holds the socket learnt from a fresh snapshot instead of their delta
            "via_snapshot": len(set(sent[home]) & resynced[(home, reader)] - seen),
            "from_ts": summarize([arrived - ts for _, arrived, ts in mine]),
            "from_201": summarize([arrived - created[b] for b, arrived, _ in mine])}
    return {"pairs": pairs, "holds_per_home": {h: len(v) for h, v in sent.items()}}


# -- local vs remote ----------------------------------------------------------------------

def _others(cluster: BenchCluster, home: str) -> list[str]:
    return [n for r in cluster.topology.regions if r != home for n in cluster.nodes(r)]


async def _warm(cluster: BenchCluster, http: aiohttp.ClientSession,
                warm: dict[str, list[tuple[int, str]]]) -> None:
    """One hold + confirm per (node, home region): pools and prepared statements exist.
    `warm`: home -> (show, seat) pairs, one per node."""
    made: dict[str, str] = {}  # booking -> the node that held it

    async def hold(node: str, show: int, seat: str) -> Held | None:
        token = token_for(cluster.topology, f"warm-{uuid.uuid4().hex[:12]}")
        async with http.post(f"{node}/booking/seats/{show}/lock",
                             json={"seat_ids": [seat]}, headers=bearer(token)) as resp:
            body = await resp.json(content_type=None)
        if resp.status != 201:
            return None
        made[body["booking_id"]] = node
        return Held(body["booking_id"], show, token, body["amount_paise"])

    holds = await asyncio.gather(*(hold(node, *warm[home][i])
                                   for home in warm for i, node in enumerate(cluster.nodes())))

    async def confirm(booking: str, token: str, payment: str) -> None:
        async with http.post(f"{made[booking]}/booking/booking/{booking}/confirm",
                             json={"payment_id": payment},
                             headers=bearer(token, **{"Idempotency-Key": uuid.uuid4().hex})
                             ) as resp:
            await resp.read()

    paid = await pay(cluster, http, [h for h in holds if h is not None])
    await asyncio.gather(*(confirm(*item) for item in paid))


async def local_remote(cluster: BenchCluster, http: aiohttp.ClientSession, load: Load,
                       pools: dict[str, dict[str, dict[int, list[str]]]]) -> dict[str, Any]:
    """`pools`: home -> {"local": seats, "remote": seats, "warm": seats} (show -> seats)."""
    regions = list(cluster.topology.regions)
    # Each seat with its own show: a warm pool may span two shows, and the first seats of
    # the second have the same ids as seats of the first that the remote pool holds.
    await _warm(cluster, http, {h: [(show, seat) for show, seats in pools[h]["warm"].items()
                                    for seat in seats] for h in regions})
    base = {"concurrency": load.wan_clients, "duration_s": load.duration_s / 2,
            "max_requests": load.wan_requests, "warm_urls": []}
    timeout = load.duration_s * 3 + 120

    async def run(spec: dict[str, Any]) -> dict[str, Any]:
        return await loadgen.run_processes([{**base, **spec}], timeout)

    out: dict[str, Any] = {}
    made: dict[str, list[Held]] = {}
    for where in ("local", "remote"):
        groups: list[dict[str, Any]] = [
            {"nodes": _others(cluster, h) if where == "remote" else cluster.nodes(h),
             "pool": {str(s): seats for s, seats in pools[h][where].items()}}
            for h in regions]
        result = await run({"kind": "holds", "groups": groups, "user": f"wan-{where}",
                            "topology": str(cluster.topology.path)})
        out[f"hold_{where}"] = report(result, "201")
        made[where] = held(result["created"])
    for where in ("local", "remote"):
        paid = dict(zip([h.booking_id for h in made[where]],
                        await pay(cluster, http, made[where]), strict=True))
        groups = [{"nodes": _others(cluster, h) if where == "remote" else cluster.nodes(h),
                   "bookings": [paid[b.booking_id] for b in made[where]
                                if cluster.home_of(b.show) == h]}
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
