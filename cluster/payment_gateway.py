"""A payment gateway simulator, started by `bookcluster up` when the topology has `payments`.

The merchant API needs `Authorization: Bearer <gateway_api_key>`, as a real
gateway's does (401 otherwise):
    POST /intents  {"booking_id", "amount_paise", "region",
                    "capture_delay_ms"?, "outcome"?: "capture" | "fail",
                    "webhook"?: false (tests: capture without telling us)}  -> 201 intent
    GET  /intents/{id}                                                      -> the intent
    POST /refunds  {"payment_id", "amount_paise"}                           -> 200 (idempotent)
The customer's side is public:
    GET  /checkout/{id}   where the customer pays: the amount and the intent's status
    GET  /healthz

Each intent is captured (or fails: a configurable share, or as asked) after a
delay, then a signed webhook goes to a node of the booking's home region,
retried with the same event id until a node answers 2xx.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import random
import secrets
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from aiohttp import web
from aiohttp.typedefs import Handler

from region_node.signing import SIGNATURE_HEADER, sign_webhook
from router.errors import RouterError
from router.topology import Topology, load_topology

log = logging.getLogger(__name__)

DELIVERY_ATTEMPTS = 40
MAX_BACKOFF_S = 2.0


@dataclass
class Intent:
    id: str
    booking_id: str
    amount_paise: int
    region: str
    status: str = "PENDING"  # PENDING -> CAPTURED | FAILED; CAPTURED -> REFUNDED
    event_id: str = ""
    deliveries: int = 0
    delivered: bool = False
    refunded_paise: int = 0
    created_at: float = field(default_factory=time.time)


class Gateway:
    def __init__(self, topology: Topology, rng: random.Random | None = None) -> None:
        assert topology.payments is not None, "topology has no payments section"
        self.topology = topology
        self.config = topology.payments
        self.rng = rng or random.Random()
        self.intents: dict[str, Intent] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    def reload(self) -> None:
        """Read the topology file again: a region added since we started (`bookcluster
        topology apply` rewrites the file) gets its webhooks too."""
        try:
            self.topology = load_topology(self.topology.path, self.topology.settings.run_dir)
        except RouterError as exc:
            log.warning("topology not reloaded: %s", exc)

    def create(self, body: dict[str, Any]) -> Intent:
        intent = Intent(f"pay_{secrets.token_hex(10)}", body["booking_id"],
                        int(body["amount_paise"]), body["region"])
        delay = body.get("capture_delay_ms")
        delay_s = self.config.capture_delay_s if delay is None else int(delay) / 1000
        outcome = body.get("outcome") or (
            "fail" if self.rng.random() < self.config.fail_share else "capture")
        self.intents[intent.id] = intent
        task = asyncio.create_task(self._settle(intent, delay_s, outcome,
                                                body.get("webhook") is not False))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return intent

    async def _settle(self, intent: Intent, delay_s: float, outcome: str,
                      webhook: bool) -> None:
        await asyncio.sleep(delay_s)
        intent.status = "CAPTURED" if outcome == "capture" else "FAILED"
        intent.event_id = f"evt_{secrets.token_hex(10)}"
        event = {"event_id": intent.event_id,
                 "kind": "payment.captured" if outcome == "capture" else "payment.failed",
                 "payment_id": intent.id, "booking_id": intent.booking_id,
                 "amount_paise": intent.amount_paise}
        if webhook:
            await self._deliver(intent, json.dumps(event).encode())

    async def _deliver(self, intent: Intent, body: bytes) -> None:
        nodes = list(self.topology.region(intent.region).nodes)
        assert self._http is not None
        for attempt in range(DELIVERY_ATTEMPTS):
            node = nodes[attempt % len(nodes)]
            intent.deliveries += 1
            secret = self.topology.secrets.get("webhook_secret")
            headers = {SIGNATURE_HEADER: sign_webhook(secret, body),
                       "Content-Type": "application/json"}
            try:
                async with self._http.post(f"http://{node.host}:{node.port}/payments/webhook",
                                           data=body, headers=headers) as resp:
                    if 200 <= resp.status < 300:
                        intent.delivered = True
                        return
                    log.warning("webhook %s to %s: %d %s", intent.event_id, node, resp.status,
                                (await resp.text())[:200])
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("webhook %s to %s failed: %s", intent.event_id, node, exc)
            await asyncio.sleep(min(MAX_BACKOFF_S, 0.1 * 2 ** attempt))
        log.error("webhook %s undeliverable after %d attempts", intent.event_id,
                  DELIVERY_ATTEMPTS)

    def refund(self, payment_id: str, amount: int) -> Intent:
        intent = self.intents[payment_id]
        if intent.status not in ("CAPTURED", "REFUNDED"):
            raise ValueError(f"payment {payment_id} is {intent.status}")
        if amount != intent.amount_paise:
            raise ValueError("only full refunds are supported")
        intent.status, intent.refunded_paise = "REFUNDED", amount
        return intent


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def make_app(gateway: Gateway) -> web.Application:
    api_key = gateway.topology.secrets.get("gateway_api_key")

    @web.middleware
    async def merchant_only(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(("/intents", "/refunds")) and not hmac.compare_digest(
                request.headers.get("Authorization", "").encode(),
                f"Bearer {api_key}".encode()):
            return _error(401, "unauthorized", "the merchant API needs "
                          "Authorization: Bearer <gateway_api_key>")
        return await handler(request)

    async def checkout(request: web.Request) -> web.Response:
        intent = gateway.intents.get(request.match_info["intent_id"])
        if intent is None:
            return _error(404, "not_found", "no such payment")
        return web.json_response({"payment_id": intent.id, "amount_paise": intent.amount_paise,
                                  "status": intent.status})

    async def create(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if body.get("region") not in gateway.topology.regions:
                gateway.reload()
            if not isinstance(body.get("booking_id"), str) or \
                    not isinstance(body.get("amount_paise"), int) or \
                    body["amount_paise"] <= 0 or \
                    body.get("region") not in gateway.topology.regions:
                raise ValueError
        except (ValueError, AttributeError, RecursionError):
            return _error(422, "invalid_input",
                          "need booking_id (str), amount_paise (int), region (a known region)")
        return web.json_response(asdict(gateway.create(body)), status=201)

    async def show(request: web.Request) -> web.Response:
        intent = gateway.intents.get(request.match_info["intent_id"])
        if intent is None:
            return _error(404, "not_found", "no such payment")
        return web.json_response(asdict(intent))

    async def refund(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            intent = gateway.refund(str(body["payment_id"]), int(body["amount_paise"]))
        except KeyError:
            return _error(404, "not_found", "no such payment")
        except (ValueError, TypeError) as exc:
            return _error(422, "invalid_input", str(exc))
        return web.json_response(asdict(intent))

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "intents": len(gateway.intents)})

    app = web.Application(middlewares=[merchant_only])
    app.router.add_get("/checkout/{intent_id}", checkout)
    app.router.add_post("/intents", create)
    app.router.add_get("/intents/{intent_id}", show)
    app.router.add_post("/refunds", refund)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(topology: Topology) -> None:
    gateway = Gateway(topology)
    await gateway.start()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    runner = web.AppRunner(make_app(gateway), access_log=None)
    await runner.setup()
    assert topology.payments is not None
    ep = topology.payments.gateway
    await web.TCPSite(runner, ep.host, ep.port).start()
    log.info("payment gateway simulator on %s", ep)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await gateway.close()
        log.info("gateway stopped: %d payments", len(gateway.intents))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m cluster.payment_gateway")
    p.add_argument("--topology", type=Path, default=Path("topology.yaml"))
    p.add_argument("--run-dir", type=Path)
    args = p.parse_args(argv)
    try:
        topology = load_topology(args.topology, run_dir=args.run_dir)
        topology.secrets.require("webhook_secret", "gateway_api_key")
    except RouterError as exc:  # a bad topology or a missing secret
        raise SystemExit(f"error: {exc}") from None
    uvloop.run(serve(topology))


if __name__ == "__main__":
    main()
