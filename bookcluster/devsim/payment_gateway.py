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
                          (JSON; a browser asking for HTML gets the checkout page)
    POST /checkout/{id}/pay, /checkout/{id}/decline
                          the checkout page's buttons: settle, then 303 to return_url
    GET  /healthz

An intent made with a `return_url` is a hosted checkout, as a shop's web page makes
one: it waits for the customer's Pay or Decline on the checkout page, then sends the
browser back to `return_url` (`{PAYMENT_ID}` in it replaced by the intent's id), which
must be a page of one of the topology's nodes (a real gateway's registered redirect
URLs). Any other intent is captured (or fails: a configurable share, or as asked)
after a delay. Either way a signed webhook then goes to a node of the booking's home
region, retried with the same event id until a node answers 2xx.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import html
import json
import logging
import random
import secrets
import signal
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import uvloop
from aiohttp import web
from aiohttp.typedefs import Handler

from bookcluster.booking.gateway import PAYMENT_ID_PLACEHOLDER, return_url_allowed
from bookcluster.booking.signing import SIGNATURE_HEADER, sign_webhook
from bookcluster.topology.errors import RouterError
from bookcluster.topology.load import load_topology
from bookcluster.topology.model import Topology

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
    return_url: str | None = None  # a hosted checkout: the customer settles it


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
                        int(body["amount_paise"]), body["region"],
                        return_url=body.get("return_url"))
        self.intents[intent.id] = intent
        if intent.return_url is not None:
            return intent  # the customer pays or declines at the checkout page
        delay = body.get("capture_delay_ms")
        delay_s = self.config.capture_delay_s if delay is None else int(delay) / 1000
        outcome = body.get("outcome") or (
            "fail" if self.rng.random() < self.config.fail_share else "capture")
        self._spawn(self._settle_later(intent, delay_s, outcome,
                                       body.get("webhook") is not False))
        return intent

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle_later(self, intent: Intent, delay_s: float, outcome: str,
                            webhook: bool) -> None:
        await asyncio.sleep(delay_s)
        self.settle(intent, outcome, webhook)

    def settle(self, intent: Intent, outcome: str, webhook: bool = True) -> None:
        """CAPTURED or FAILED now; the webhook follows."""
        intent.status = "CAPTURED" if outcome == "capture" else "FAILED"
        intent.event_id = f"evt_{secrets.token_hex(10)}"
        event = {"event_id": intent.event_id,
                 "kind": "payment.captured" if outcome == "capture" else "payment.failed",
                 "payment_id": intent.id, "booking_id": intent.booking_id,
                 "amount_paise": intent.amount_paise}
        if webhook:
            self._spawn(self._deliver(intent, json.dumps(event).encode()))

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


def back_to(intent: Intent) -> str:
    assert intent.return_url is not None
    return intent.return_url.replace(PAYMENT_ID_PLACEHOLDER, intent.id)


def rupees(paise: int) -> str:
    return f"₹{paise // 100:,}" if paise % 100 == 0 else f"₹{paise / 100:,.2f}"


CHECKOUT_STYLE = """body{font-family:system-ui,sans-serif;max-width:26rem;margin:2rem auto;
padding:0 1rem;color:#1d2433}h1{font-size:1.3rem}
.amount{font-size:2rem;font-weight:700;margin:.5rem 0}
form{display:inline}button{font:inherit;padding:.6rem 1.2rem;margin:.3rem .5rem .3rem 0;
border-radius:.4rem;border:1px solid #999;background:#fff;cursor:pointer}
button.pay{background:#1b7f3b;border-color:#1b7f3b;color:#fff}.muted{color:#5b6475}"""


def checkout_page(intent: Intent) -> web.Response:
    """The simulator's checkout: what is paid, and Pay / Decline while it waits."""
    e = html.escape
    if intent.status == "PENDING" and intent.return_url is not None:
        action = (f'<form method="post" action="/checkout/{e(intent.id)}/pay">'
                  f'<button class="pay" type="submit">Pay {rupees(intent.amount_paise)}'
                  '</button></form>'
                  f'<form method="post" action="/checkout/{e(intent.id)}/decline">'
                  '<button type="submit">Decline</button></form>')
    elif intent.status == "PENDING":
        action = "<p>This payment settles by itself in a moment.</p>"
    else:
        action = f"<p>Payment {e(intent.status.lower())}.</p>" + (
            f'<p><a href="{e(back_to(intent))}">Back to the shop</a></p>'
            if intent.return_url else "")
    body = (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Checkout — payment gateway simulator</title><style>{CHECKOUT_STYLE}</style>"
            "</head><body><h1>Payment gateway simulator</h1>"
            f'<p class="muted">Booking {e(intent.booking_id)} · payment {e(intent.id)}</p>'
            f'<p class="amount" id="amount">{rupees(intent.amount_paise)}</p>'
            f"{action}<p class=muted>A simulator: no card, no money.</p></body></html>")
    # Forms post here; their redirect goes back to the shop's page (form-action covers it).
    back = "" if intent.return_url is None else " " + _origin(intent.return_url)
    csp = (f"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'{back}; "
           "frame-ancestors 'none'; base-uri 'none'")
    return web.Response(text=body, content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": csp, "Cache-Control": "no-store"})


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


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
        if "text/html" in request.headers.get("Accept", ""):
            return checkout_page(intent)
        return web.json_response({"payment_id": intent.id, "amount_paise": intent.amount_paise,
                                  "status": intent.status})

    def customer_settles(outcome: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            intent = gateway.intents.get(request.match_info["intent_id"])
            if intent is None:
                return _error(404, "not_found", "no such payment")
            if intent.return_url is None:
                return _error(409, "not_hosted", "this payment settles by itself")
            if intent.status == "PENDING":  # a second press changes nothing
                gateway.settle(intent, outcome)
            raise web.HTTPSeeOther(back_to(intent))
        return handler

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
            if body.get("return_url") is not None and not (
                    isinstance(body["return_url"], str)
                    and return_url_allowed(body["return_url"], gateway.topology)):
                raise ValueError
        except (ValueError, AttributeError, RecursionError):
            return _error(422, "invalid_input",
                          "need booking_id (str), amount_paise (int), region (a known region), "
                          "and return_url, if any, a page of one of the topology's nodes")
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
    app.router.add_post("/checkout/{intent_id}/pay", customer_settles("capture"))
    app.router.add_post("/checkout/{intent_id}/decline", customer_settles("fail"))
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
    p = argparse.ArgumentParser(prog="python -m bookcluster.devsim.payment_gateway")
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
