"""Payment webhooks and the late-payment saga, with the gateway simulator."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import aiohttp

from bookcluster.booking.signing import SIGNATURE_HEADER, sign_webhook
from bookcluster.stores.jobqueue import dead_letters
from tests.integration.conftest import SHORT_TTL_S, Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_holds import confirm, hold
from tests.integration.node.test_jobs import eventually
from tests.integration.support import Session, call, captured_payment, merchant, metric


def gateway(cluster: Cluster) -> str:
    assert cluster.topology.payments is not None
    ep = cluster.topology.payments.gateway
    return f"http://{ep.host}:{ep.port}"


async def pay(http: aiohttp.ClientSession, cluster: Cluster, held: dict[str, Any],
              **options: Any) -> str:
    status, intent = await call(http, "POST", f"{gateway(cluster)}/intents", json={
        "booking_id": held["booking_id"], "amount_paise": held["amount_paise"],
        "region": held["region"], **options}, headers=merchant(), anonymous=True)
    assert status == 201, intent
    return str(intent["id"])


async def booking_when(http: aiohttp.ClientSession, node: str, booking_id: str,
                       done: Any, within: float = 15.0) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        _, body = await call(http, "GET", f"{node}/booking/booking/{booking_id}")
        return body if done(body) else None
    result: dict[str, Any] = await eventually(check, within)
    return result


async def post_webhook(http: aiohttp.ClientSession, node: str, event: dict[str, Any],
                       secret: str | None = None, at: int | None = None,
                       header: str | None = None) -> tuple[int, Any]:
    body = json.dumps(event).encode()
    secret = secret or Session.topology.secrets.get("webhook_secret")  # type: ignore[union-attr]
    signature = header if header is not None else sign_webhook(secret, body, at)
    return await call(http, "POST", f"{node}/payments/webhook", data=body,
                      headers={SIGNATURE_HEADER: signature})


async def test_captured_payment_confirms_the_booking(clean: Cluster,
                                                     http: aiohttp.ClientSession,
                                                     catalog: Any) -> None:
    show = shows_in(clean, catalog, "south")[0]
    _, held = await hold(http, clean.node("north"), show, "pia", seats_of(catalog, show, 2))
    intent = await pay(http, clean, held, capture_delay_ms=100)
    body = await booking_when(http, clean.node("west"), held["booking_id"],
                              lambda b: b["status"] != "INITIATED")
    assert body["status"] == "CONFIRMED" and body["payment_id"] == intent
    assert body["payments"] == [{"payment_id": intent, "status": "CAPTURED",
                                 "amount_paise": held["amount_paise"]}]


async def test_failed_payment_releases_the_seats(clean: Cluster, http: aiohttp.ClientSession,
                                                 catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[0]
    seats = seats_of(catalog, show, 2)
    _, held = await hold(http, clean.node("west"), show, "pia", seats)
    await pay(http, clean, held, capture_delay_ms=50, outcome="fail")
    body = await booking_when(http, clean.node("north"), held["booking_id"],
                              lambda b: b["status"] != "INITIATED")
    assert body["status"] == "CANCELLED" and body["payments"][0]["status"] == "FAILED"
    status, _ = await hold(http, clean.node("south"), show, "other", seats)
    assert status == 201


async def test_late_payment_after_resale_is_refunded(clean: Cluster,
                                                     http: aiohttp.ClientSession,
                                                     catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[1]
    seats = seats_of(catalog, show, 2)
    _, late = await hold(http, clean.short_ttl_node, show, "slowpoke", seats)
    intent = await pay(http, clean, late, capture_delay_ms=int(SHORT_TTL_S * 1000) + 1500)
    await asyncio.sleep(SHORT_TTL_S + 0.2)
    status, fast = await hold(http, clean.node("south"), show, "quick", seats)
    assert status == 201
    assert (await confirm(http, clean.node("south"), fast["booking_id"], "k", "pay-q"))[0] == 200

    body = await booking_when(http, clean.node("west"), late["booking_id"],
                              lambda b: any(p["status"] == "REFUNDED" for p in b["payments"]))
    assert body["status"] == "EXPIRED"
    assert body["payments"] == [{"payment_id": intent, "status": "REFUNDED",
                                 "amount_paise": late["amount_paise"]}]
    _, at_gateway = await call(http, "GET", f"{gateway(clean)}/intents/{intent}",
                               headers=merchant())
    assert at_gateway["status"] == "REFUNDED"
    sold = await clean.fetch("north", "SELECT booking_id FROM booking_seat "
                             "WHERE show_id = $1 AND sold", show)
    assert {r["booking_id"] for r in sold} == {fast["booking_id"]}
    notes = await clean.fetch("north", "SELECT kind FROM notification WHERE booking_id = $1",
                              late["booking_id"])
    assert [n["kind"] for n in notes] == ["refunded"]


async def test_webhook_checks(clean: Cluster, http: aiohttp.ClientSession,
                              catalog: Any) -> None:
    show = shows_in(clean, catalog, "west")[0]
    _, held = await hold(http, clean.node("west"), show, "u", seats_of(catalog, show, 1))
    payment = await captured_payment(http, held)  # the saga checks it at the gateway
    event = {"event_id": "evt_manual_1", "kind": "payment.captured", "payment_id": payment,
             "booking_id": held["booking_id"], "amount_paise": held["amount_paise"]}
    node = clean.node("north")  # any region's node accepts it and routes it home
    status, body = await post_webhook(http, node, event, secret="wrong-secret-wrong-secret")
    assert status == 401 and body["error"] == "bad_signature"
    status, body = await post_webhook(http, node, event, at=int(time.time()) - 600)
    assert status == 400 and body["error"] == "stale_webhook"
    status, body = await post_webhook(http, node, event, header="")
    assert status == 400 and body["error"] == "missing_signature"
    status, body = await post_webhook(http, node, event, header="v1=abc")
    assert status == 400 and body["error"] == "malformed_signature"
    status, body = await post_webhook(http, node, {**event, "amount_paise": "ten"})
    assert status == 422 and body["error"] == "invalid_input"
    assert not await clean.fetch("west", "SELECT 1 FROM payment_event")

    first = await post_webhook(http, node, event)
    again = await post_webhook(http, clean.node("south"), event)
    assert first == (200, {"received": True, "duplicate": False, "event_id": "evt_manual_1",
                           "region": "west"})
    assert again[0] == 200 and again[1]["duplicate"] is True
    body = await booking_when(http, node, held["booking_id"],
                              lambda b: b["status"] == "CONFIRMED")
    events = await clean.fetch("west", "SELECT outcome FROM payment_event")
    assert [e["outcome"] for e in events] == ["confirmed"]
    assert len(await clean.fetch("west", "SELECT 1 FROM outbox WHERE kind = 'payment_event'")) == 1


async def test_every_captured_payment_ends_confirmed_or_refunded(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    """A few hundred bookings with random payment delays and failures, seats contested."""
    rng = random.Random(11)
    shows = {region: shows_in(clean, catalog, region)[:2] for region in ("north", "south", "west")}
    nodes = [clean.short_ttl_node, *clean.nodes()]
    intents: dict[str, str] = {}

    async def customer(i: int) -> None:
        region = rng.choice(list(shows))
        show = rng.choice(shows[region])
        seats = rng.sample(seats_of(catalog, show, 80), rng.randint(1, 3))
        await asyncio.sleep(rng.random() * 3)
        status, held = await hold(http, rng.choice(nodes), show, f"c{i}", seats)
        if status != 201:
            return
        outcome = "fail" if rng.random() < 0.15 else "capture"
        intents[await pay(http, clean, held, outcome=outcome,
                          capture_delay_ms=rng.randint(0, 3000))] = held["booking_id"]

    await asyncio.gather(*(customer(i) for i in range(500)))
    assert len(intents) >= 150  # the rest lost the race for their seats (409)

    async def settled() -> bool:
        for region in ("north", "south", "west"):
            rows = await clean.fetch(region, "SELECT count(*) AS n FROM payment_event "
                                     "WHERE processed_at IS NULL")
            pending = await clean.fetch(region, "SELECT count(*) AS n FROM payment "
                                        "WHERE status = 'REFUND_PENDING'")
            if rows[0]["n"] or pending[0]["n"]:
                return False
        states = await asyncio.gather(*(call(http, "GET", f"{gateway(clean)}/intents/{i}",
                                             headers=merchant())
                                        for i in intents))
        return all(s["status"] != "PENDING" and s["delivered"] for _, s in states)

    await eventually(settled, within=60)
    captured = refunded = confirmed = 0
    for intent_id, booking_id in intents.items():
        _, at_gateway = await call(http, "GET", f"{gateway(clean)}/intents/{intent_id}",
                                  headers=merchant())
        _, booking = await call(http, "GET", f"{clean.node('north')}/booking/booking/{booking_id}")
        ours = booking["status"] == "CONFIRMED" and booking["payment_id"] == intent_id
        if at_gateway["status"] == "FAILED":
            assert not ours
            continue
        captured += 1
        was_refunded = at_gateway["status"] == "REFUNDED"
        assert ours != was_refunded, (intent_id, booking, at_gateway)  # exactly one of them
        refunded += was_refunded
        confirmed += ours
    assert captured == confirmed + refunded and confirmed > 0
    for region in ("north", "south", "west"):
        assert not await clean.fetch(region, "SELECT show_id, seat_id FROM booking_seat "
                                     "WHERE sold GROUP BY 1, 2 HAVING count(*) > 1")
    print(f"captured {captured}: {confirmed} confirmed, {refunded} refunded")


async def test_capture_for_an_unknown_booking_of_a_known_show_is_refunded(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    """A booking id we never issued, of a show we know: no payment row can reference
    it, but the money goes back and the event is processed (not retried, not dead)."""
    show = shows_in(clean, catalog, "south")[0]
    orphan = {"booking_id": f"b{show}-0000000000000000", "region": "south",
              "amount_paise": 25_000}
    worker = clean.topology.region("south").worker
    assert worker is not None
    worker_url = f"http://{worker.host}:{worker.port}"
    failures_before = await metric(http, worker_url, "bookcluster_jobs_total",
                                   kind="payment_event", outcome="retry")
    intent = await captured_payment(http, orphan)  # captured at the gateway, no webhook
    event = {"event_id": "evt_orphan_1", "kind": "payment.captured", "payment_id": intent,
             "booking_id": orphan["booking_id"], "amount_paise": orphan["amount_paise"]}
    status, body = await post_webhook(http, clean.node("north"), event)
    assert status == 200 and body["region"] == "south", body

    async def refunded() -> dict[str, Any] | None:
        _, at_gateway = await call(http, "GET", f"{gateway(clean)}/intents/{intent}",
                                   headers=merchant(), anonymous=True)
        return at_gateway if at_gateway["status"] == "REFUNDED" else None

    at_gateway = await eventually(refunded, within=15)
    assert at_gateway["refunded_paise"] == orphan["amount_paise"]
    events = await clean.fetch("south", "SELECT processed_at, outcome FROM payment_event "
                               "WHERE event_id = $1", event["event_id"])
    assert events[0]["processed_at"] is not None
    assert events[0]["outcome"] == "refund: no booking"
    assert await clean.fetch("south", "SELECT 1 FROM payment") == []
    assert await metric(http, worker_url, "bookcluster_jobs_total", kind="payment_event",
                        outcome="retry") == failures_before
    conn = await clean.pg("south")
    try:
        assert await dead_letters(conn) == []
    finally:
        await conn.close()


async def event_outcome(cluster: Cluster, region: str, event_id: str) -> str:
    async def processed() -> str | None:
        rows = await cluster.fetch(region, "SELECT outcome FROM payment_event "
                                   "WHERE event_id = $1 AND processed_at IS NOT NULL", event_id)
        return str(rows[0]["outcome"]) if rows else None
    outcome: str = await eventually(processed, within=15)
    return outcome


async def test_capture_for_an_unknown_show_is_stored_and_refunded(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    """No home region to store it in (a show we do not know, a booking id not of our
    making): the receiving node's region stores it and its worker refunds it (it was
    a 404 or a 422 at every node, and the money stayed captured)."""
    unknown = max(s.id for s in catalog.shows) + 1000
    for n, booking_id in enumerate((f"b{unknown}-00000000000000ab", "not-a-booking")):
        booking = {"booking_id": booking_id, "region": "south", "amount_paise": 31_000 + n}
        intent = await captured_payment(http, booking)
        event = {"event_id": f"evt_unroutable_{n}", "kind": "payment.captured",
                 "payment_id": intent, "booking_id": booking_id,
                 "amount_paise": booking["amount_paise"]}
        status, body = await post_webhook(http, clean.node("north"), event)
        assert (status, body.get("region"), body.get("duplicate")) == (200, "north", False), \
            body
        assert await event_outcome(clean, "north", event["event_id"]) == \
            "refunded: no such show"
        _, at_gateway = await call(http, "GET", f"{gateway(clean)}/intents/{intent}",
                                   headers=merchant(), anonymous=True)
        assert (at_gateway["status"], at_gateway["refunded_paise"]) == \
            ("REFUNDED", booking["amount_paise"])
        again = await post_webhook(http, clean.node("north", 1), event)
        assert again[0] == 200 and again[1]["duplicate"] is True


async def test_an_event_with_another_bookings_payment_refunds_and_sells_nothing(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    """A signed event naming booking B with booking A's (used) payment: A keeps its
    payment, B is neither sold nor expired, in A's region and in another one."""
    show_a, show_c = shows_in(clean, catalog, "north")[0], shows_in(clean, catalog, "south")[0]
    _, a = await hold(http, clean.node("north"), show_a, "ann", seats_of(catalog, show_a, 1))
    paid_a = await captured_payment(http, a, webhook=True)
    await booking_when(http, clean.node("north"), a["booking_id"],
                       lambda b: b["status"] == "CONFIRMED")
    _, b = await hold(http, clean.node("north"), show_a, "bob", seats_of(catalog, show_a, 3)[1:])
    _, c = await hold(http, clean.node("south"), show_c, "cid", seats_of(catalog, show_c, 1))
    for name, other, region in (("b", b, "north"), ("c", c, "south")):
        event = {"event_id": f"evt_reused_{name}", "kind": "payment.captured",
                 "payment_id": paid_a, "booking_id": other["booking_id"],
                 "amount_paise": other["amount_paise"]}  # the event's amount fits B (C)
        assert (await post_webhook(http, clean.node("west"), event))[0] == 200
        outcome = await event_outcome(clean, region, event["event_id"])
        assert outcome.startswith("ignored: ") and a["booking_id"] in outcome, outcome
    _, at_gateway = await call(http, "GET", f"{gateway(clean)}/intents/{paid_a}",
                               headers=merchant(), anonymous=True)
    assert at_gateway["status"] == "CAPTURED"
    _, mine = await call(http, "GET", f"{clean.node('south')}/booking/booking/{a['booking_id']}")
    assert mine["status"] == "CONFIRMED" and mine["payment_id"] == paid_a
    assert mine["payments"] == [{"payment_id": paid_a, "status": "CAPTURED",
                                 "amount_paise": a["amount_paise"]}]
    for other in (b, c):
        _, theirs = await call(http, "GET",
                               f"{clean.node('west')}/booking/booking/{other['booking_id']}")
        assert theirs["status"] == "INITIATED" and theirs["payments"] == [], theirs
    for region in ("north", "south"):
        assert await clean.fetch(region, "SELECT 1 FROM outbox WHERE kind = 'refund'") == []
