"""Helpers shared by tests: free ports, small topologies, HTTP calls as a user, payments."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp

from bookcluster.local.loopback import REGIONS
from bookcluster.local.loopback import topology_yaml as loopback_topology
from bookcluster.local.ports import free_ports
from bookcluster.node.auth import mint
from bookcluster.stores.probe import scrape_metric
from bookcluster.topology.model import Topology

__all__ = ["REGIONS", "free_ports"]

BOOKING_IN_URL = re.compile(r"/booking/booking/(b[0-9]+-[0-9a-f]{16})")


class Session:
    """The session cluster's topology (for tokens) and who holds which booking."""

    topology: Topology | None = None
    owners: dict[str, str] = {}  # noqa: RUF012 - booking id -> user, filled by holds
    tokens: dict[tuple[str, tuple[str, ...]], str] = {}  # noqa: RUF012
    # (booking, label) -> the payment id being or having been made
    payments: dict[tuple[str, str], asyncio.Future[str]] = {}  # noqa: RUF012


def use_topology(topology: Topology) -> None:
    Session.topology = topology
    Session.tokens.clear()


def bearer(user: str, roles: tuple[str, ...] = ()) -> dict[str, str]:
    """An Authorization header for `user`, signed with the session cluster's key."""
    assert Session.topology is not None, "no session cluster"
    token = Session.tokens.get((user, roles))
    if token is None:
        token = Session.tokens[(user, roles)] = mint(Session.topology, user, 3600, roles)
    return {"Authorization": f"Bearer {token}"}


def topology_yaml(run_dir: Path, **options: Any) -> str:
    """The loopback topology tests use: durable off; with workers, the gateway too."""
    if options.get("workers"):
        options.setdefault("payments", True)
    return loopback_topology(run_dir, **options)


def _acting_user(url: str, kwargs: dict[str, Any]) -> str | None:
    """Who a call acts for when the test does not say: a hold's `user_id`, else the
    holder of the booking in the URL."""
    body = kwargs.get("json")
    if isinstance(body, dict) and isinstance(body.get("user_id"), str):
        return body["user_id"]
    match = BOOKING_IN_URL.search(url)
    return Session.owners.get(match.group(1)) if match else None


async def call(session: aiohttp.ClientSession, method: str, url: str, *,
               user: str | None = None, anonymous: bool = False,
               **kwargs: Any) -> tuple[int, Any]:
    """A JSON call as `user` (default: see `_acting_user`), or with no token at all."""
    user = None if anonymous else (user or _acting_user(url, kwargs))
    if user is not None:
        kwargs["headers"] = {**bearer(user), **(kwargs.get("headers") or {})}
    async with session.request(method, url, **kwargs) as resp:
        body = await resp.json(content_type=None)
    if resp.status == 201 and isinstance(body, dict) and "booking_id" in body \
            and "user_id" in body:
        Session.owners[body["booking_id"]] = body["user_id"]
    return resp.status, body


def merchant() -> dict[str, str]:
    """Headers of the merchant API at the gateway (its API key)."""
    assert Session.topology is not None
    return {"Authorization": f"Bearer {Session.topology.secrets.get('gateway_api_key')}"}


async def captured_payment(session: aiohttp.ClientSession, booking: dict[str, Any], *,
                           amount_paise: int | None = None, webhook: bool = False) -> str:
    """A payment the gateway captured for `booking` (its amount unless told), made with
    the merchant's API key; without its webhook unless asked, so `confirm` sells it."""
    topology = Session.topology
    assert topology is not None and topology.payments is not None
    gateway = topology.payments.gateway
    base = f"http://{gateway.host}:{gateway.port}"
    headers = merchant()
    body = {"booking_id": booking["booking_id"], "region": booking["region"],
            "amount_paise": booking["amount_paise"] if amount_paise is None else amount_paise,
            "capture_delay_ms": 0, "outcome": "capture", "webhook": webhook}
    async with session.post(f"{base}/intents", json=body, headers=headers) as resp:
        assert resp.status == 201, await resp.text()
        payment_id = str((await resp.json())["id"])
    for _ in range(100):
        async with session.get(f"{base}/intents/{payment_id}", headers=headers) as resp:
            if (await resp.json())["status"] == "CAPTURED":
                return payment_id
        await asyncio.sleep(0.05)
    raise AssertionError(f"payment {payment_id} was not captured")


async def paid(session: aiohttp.ClientSession, node: str, booking_id: str, label: str) -> str:
    """The real captured payment a test calls `label` for this booking (made once)."""
    async def make() -> str:
        status, booking = await call(session, "GET", f"{node}/booking/booking/{booking_id}")
        assert status == 200, booking
        return await captured_payment(session, booking)

    # Concurrent callers with one label share one payment.
    found = Session.payments.get((booking_id, label))
    if found is None:
        found = Session.payments[(booking_id, label)] = asyncio.ensure_future(make())
    return await found


async def metric(session: aiohttp.ClientSession, node: str, name: str,
                 **labels: str) -> float:
    """Sum of a node's Prometheus samples `name` whose labels include `labels`."""
    return await scrape_metric(session, node, name, **labels)
