"""Real captured payments for the bench's confirms, made at the gateway simulator.

`confirm` sells only a payment the gateway captured for that booking and exact
amount, so each held booking gets one: an intent created with the merchant API
(`Authorization: Bearer <gateway_api_key>`, `capture_delay_ms: 0`), then we wait
until the gateway captured every one, so no capture falls into a measured phase.
Not measured. The intents ask for no webhook (`"webhook": false`, as a customer
who comes back to confirm before the gateway's event arrives): otherwise the
region worker's saga would sell the bookings before the confirm phase, which
would then only replay those sales.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, NamedTuple

import aiohttp

from .local import BenchCluster

CONCURRENCY = 32  # requests in flight to the gateway (one Python process)
SETTLE_TIMEOUT_S = 180.0
POLL_EVERY_S = 0.2


class Held(NamedTuple):
    """A hold made by the bench: what paying and confirming it needs."""

    booking_id: str
    show: int
    token: str  # its owner's
    amount_paise: int


def held(created: list[list[Any]]) -> list[Held]:
    """Holds as the load generators report them ([booking, show, token, amount])."""
    return [Held(str(b), int(s), str(t), int(a)) for b, s, t, a in created]


class GatewayRefused(RuntimeError):
    pass


async def pay(cluster: BenchCluster, http: aiohttp.ClientSession,
              holds: list[Held]) -> list[list[str]]:
    """A captured payment for each hold. Returns [booking, token, payment id] for each,
    the `confirms` load generators' items."""
    payments = cluster.topology.payments
    assert payments is not None, "the bench cluster runs the gateway simulator"
    base = f"http://{payments.gateway.host}:{payments.gateway.port}"
    headers = {"Authorization": f"Bearer {cluster.topology.secrets.get('gateway_api_key')}"}
    gate = asyncio.Semaphore(CONCURRENCY)

    async def call(method: str, path: str, body: Any = None) -> dict[str, Any]:
        async with gate, http.request(method, base + path, json=body,
                                      headers=headers) as resp:
            answer = await resp.json(content_type=None)
            if resp.status not in (200, 201):
                raise GatewayRefused(f"{method} {path}: {resp.status} {answer}")
            return dict(answer)

    async def create(hold: Held) -> str:
        intent = await call("POST", "/intents", {
            "booking_id": hold.booking_id, "amount_paise": hold.amount_paise,
            "region": cluster.home_of(hold.show), "capture_delay_ms": 0, "outcome": "capture",
            "webhook": False})
        return str(intent["id"])

    ids = await asyncio.gather(*(create(h) for h in holds))
    waiting, deadline = set(ids), time.monotonic() + SETTLE_TIMEOUT_S
    while waiting:
        await asyncio.sleep(POLL_EVERY_S)
        states = await asyncio.gather(*(call("GET", f"/intents/{i}") for i in waiting))
        waiting = {s["id"] for s in states if s["status"] != "CAPTURED"}
        if waiting and time.monotonic() > deadline:
            raise TimeoutError(f"{len(waiting)} payments not captured after "
                               f"{SETTLE_TIMEOUT_S:.0f} s")
    return [[h.booking_id, h.token, i] for h, i in zip(holds, ids, strict=True)]
