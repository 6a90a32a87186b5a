"""At the door, against the session cluster: signed tickets that verify offline with the
published keys, scans redeemed once at the home region (nonce retry, two gates at once,
forged, altered, wrong show, unknown key, another theatre's scanner), refunded and
unconfirmed tickets refused, cancel after entry refused, and offline batches that
report a double entry."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import zxingcpp
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from bookcluster.booking import ticket_keys
from bookcluster.booking.signing import ticket_reference
from bookcluster.node.auth import mint
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_holds import confirm, hold
from tests.integration.support import Session, bearer, call


def gate_token(theatres: tuple[str, ...], user: str = "gate-1",
               roles: tuple[str, ...] = ("scanner",)) -> dict[str, str]:
    assert Session.topology is not None
    return {"Authorization": f"Bearer {mint(Session.topology, user, 600, roles, theatres)}"}


def theatre_of(catalog: Any, show_id: int) -> str:
    show = next(s for s in catalog.shows if s.id == show_id)
    return str(catalog.theatre_of_screen()[show.screen_id])


async def sold(clean: Cluster, http: aiohttp.ClientSession, catalog: Any, user: str,
               index: int, seats: int = 2) -> tuple[int, dict[str, Any]]:
    """A confirmed booking of `user` in a west show: (show, the confirm's answer)."""
    show = shows_in(clean, catalog, "west")[index]
    status, held = await hold(http, clean.node("west"), show, user,
                              seats_of(catalog, show, seats))
    assert status == 201, held
    status, body = await confirm(http, clean.node("west"), held["booking_id"], f"k-{user}",
                                 f"p-{user}")
    assert status == 200, body
    return show, body


def nonce() -> str:
    return uuid.uuid4().hex


async def scan(http: aiohttp.ClientSession, node: str, payload: str, headers: dict[str, str],
               gate: str = "g1", key: str | None = None, **more: Any) -> tuple[int, Any]:
    body = {"payload": payload, "nonce": key or nonce(), "gate": gate, **more}
    async with http.post(f"{node}/checkin/scan", json=body, headers=headers) as resp:
        return resp.status, await resp.json()


def altered(payload: str, change: dict[str, Any]) -> str:
    prefix, body, signature = payload.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(change)
    raw = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{prefix}.{raw}.{signature}"


async def published_keys(http: aiohttp.ClientSession, node: str) -> Any:
    async with http.get(f"{node}/tickets/keys") as resp:
        assert resp.status == 200
        return await resp.json()


async def heads_exported(clean: Cluster, http: aiohttp.ClientSession, show: int,
                         inside: int | None = None) -> dict[str, float]:
    """The show's `bookcluster_show_heads` series, from every region's worker, once the
    home's worker exports them (with `inside` as given): each must come from one region."""
    found: dict[str, float] = {}
    for _ in range(50):
        found, regions = {}, set()
        for region in clean.topology.regions:
            endpoint = clean.topology.region(region).worker
            assert endpoint is not None
            async with http.get(f"http://{endpoint}/metrics") as resp:
                for family in text_string_to_metric_families(await resp.text()):
                    for sample in family.samples:
                        if sample.name == "bookcluster_show_heads" \
                                and sample.labels["show"] == str(show):
                            assert sample.labels["count"] not in found, sample
                            found[sample.labels["count"]] = sample.value
                            regions.add(sample.labels["region"])
        if found and (inside is None or found.get("inside") == inside):
            assert regions == {"west"}, regions
            return found
        await asyncio.sleep(0.2)
    return found


async def test_a_confirmed_ticket_is_signed_and_verifies_with_the_published_keys(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show, confirmed = await sold(clean, http, catalog, "tess", 0)
    payload = confirmed["ticket"]["payload"]
    # The owner's booking carries the same text; another user's is not revealed.
    status, mine = await call(http, "GET",
                              f"{clean.node('north')}/booking/booking/{confirmed['booking_id']}",
                              user="tess")
    assert status == 200 and mine["ticket"]["payload"] == payload
    # Any region publishes the keys; with them alone the ticket verifies offline.
    published = await published_keys(http, clean.node("south"))
    assert all("private" not in json.dumps(k) for k in published["keys"])
    claims = ticket_keys.verify(payload, ticket_keys.public_keys(published))
    assert claims.booking_id == confirmed["booking_id"] and claims.show_id == show
    assert list(claims.seat_ids) == confirmed["seat_ids"]
    assert claims.key_id.startswith("west-")
    # The QR of the ticket image is that text.
    async with http.get(f"{clean.node('west')}/booking/booking/{claims.booking_id}/ticket",
                        headers=bearer("tess")) as resp:
        assert resp.status == 200
        png = await resp.read()
    [code] = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert code.text == payload


async def test_a_ticket_goes_in_once_a_retry_replays_and_out_lets_it_in_again(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show, confirmed = await sold(clean, http, catalog, "ugo", 1)
    payload, booking = confirmed["ticket"]["payload"], confirmed["booking_id"]
    gate = gate_token((theatre_of(catalog, show),))
    # Out before it went in: refused, and nobody is counted inside.
    status, early = await scan(http, clean.node("west"), payload, gate, "door-a",
                               direction="out")
    assert (status, early["error"]) == (409, "not_inside"), early
    first = nonce()
    # Scanned through a node of another region: forwarded to the home region.
    status, admitted = await scan(http, clean.node("north"), payload, gate, "door-a", first)
    assert status == 200, admitted
    assert admitted["outcome"] == "admitted" and admitted["seat_ids"] == confirmed["seat_ids"]
    assert admitted["replayed"] is False
    # The same nonce again (a retried request): the same answer.
    status, again = await scan(http, clean.node("west"), payload, gate, "door-a", first)
    assert status == 200 and again["outcome"] == "admitted" and again["replayed"] is True
    # Another scan: refused, saying when and where it went in.
    status, refused = await scan(http, clean.node("south"), payload, gate, "door-b")
    assert status == 409, refused
    assert refused["error"] == "already_admitted" and refused["prior_gate"] == "door-a"
    assert refused["prior_at"] == admitted["scanned_at"]
    # Out, then in again (re-entry allowed by default).
    status, out = await scan(http, clean.node("west"), payload, gate, "door-b", direction="out")
    assert (status, out["outcome"]) == (200, "exited")
    status, back = await scan(http, clean.node("west"), payload, gate, "door-b")
    assert (status, back["outcome"]) == (200, "admitted")
    rows = await clean.fetch("west", "SELECT outcome FROM checkin_scan WHERE booking_id = $1 "
                             "ORDER BY id", booking)
    assert [r["outcome"] for r in rows] == ["not_inside", "admitted", "already_admitted",
                                            "exited", "admitted"]
    # Head counts: every seat sold went in; all are inside (out and back in again).
    status, heads = await call(http, "GET", f"{clean.node('north')}/ops/headcounts?show={show}",
                               headers=bearer("root", ("operator",)), user="root")
    assert status == 200, heads
    assert heads["shows"] == [{"show_id": show, "sold": 2, "admitted": 2, "inside": 2}]
    # As metrics: one series per show and count, from its home region's worker only.
    assert await heads_exported(clean, http, show) == {"sold": 2, "admitted": 2, "inside": 2}
    for node in clean.nodes():
        async with http.get(f"{node}/metrics") as resp:
            metrics = await resp.text()
        assert "bookcluster_show_heads" not in metrics, node
    assert "bookcluster_checkin_scans_total" in metrics
    status, out = await scan(http, clean.node("west"), payload, gate, "door-b", direction="out")
    status, heads = await call(http, "GET", f"{clean.node('west')}/ops/headcounts?show={show}",
                               headers=bearer("root", ("operator",)), user="root")
    assert heads["shows"] == [{"show_id": show, "sold": 2, "admitted": 2, "inside": 0}]
    assert await heads_exported(clean, http, show, inside=0) == \
        {"sold": 2, "admitted": 2, "inside": 0}
    # A cancel after entry is refused with a clear error.
    status, body = await call(http, "POST",
                              f"{clean.node('west')}/booking/booking/{booking}/cancel",
                              user="ugo")
    assert status == 409 and body["error"] == "ticket_used", body


async def test_two_gates_at_once_admit_a_ticket_once(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show, confirmed = await sold(clean, http, catalog, "vera", 0)
    gate = gate_token((theatre_of(catalog, show),))
    nodes = clean.nodes()
    answers = await asyncio.gather(*(
        scan(http, nodes[i % len(nodes)], confirmed["ticket"]["payload"], gate, f"door-{i}")
        for i in range(12)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] + [409] * 11, answers
    assert {b["error"] for s, b in answers if s == 409} == {"already_admitted"}
    rows = await clean.fetch("west", "SELECT count(*) AS n FROM checkin_scan "
                             "WHERE booking_id = $1 AND outcome = 'admitted'",
                             confirmed["booking_id"])
    assert rows[0]["n"] == 1


async def test_forged_altered_unknown_key_wrong_show_and_strangers_are_refused(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show, confirmed = await sold(clean, http, catalog, "walt", 0)
    payload, booking = confirmed["ticket"]["payload"], confirmed["booking_id"]
    theatre = theatre_of(catalog, show)
    gate, node = gate_token((theatre,)), clean.node("west")
    forger = ticket_keys.KeyRing(["west"], "not the cluster's secret at all")
    forged = ticket_keys.sign(forger.signing("west"), booking, show, "x", ["A1", "A2"], 0)
    forged = altered(forged, {"k": ticket_keys.key_of(payload)})
    seat = confirmed["seat_ids"][0]
    cases = {
        "forged": (forged, "bad_signature"),
        "altered seat": (altered(payload, {"t": [seat, "Z99"]}), "bad_signature"),
        "unknown key": (ticket_keys.sign(forger.signing("west"), booking, show, "x", [seat], 0),
                        "unknown_key"),
        "garbage": ("hello there", "malformed_ticket"),
        # The whole ticket, by a key of a secret rotated out (not kept as the previous).
        "expired key": (ticket_keys.sign(
            ticket_keys.KeyRing(["west"], "the secret before the previous one").signing("west"),
            booking, show, str(ticket_keys.verify(payload, ticket_keys.public_keys(
                await published_keys(http, node))).screen_id),
            confirmed["seat_ids"], 0), "unknown_key"),
    }
    for name, (text, code) in cases.items():
        status, body = await scan(http, node, text, gate)
        assert (status, body["error"]) == (400, code), (name, body)
    # Another show's gate.
    other = next(s for s in shows_in(clean, catalog, "west") if s != show)
    status, body = await scan(http, node, payload, gate, show_id=other)
    assert (status, body["error"]) == (409, "wrong_show"), body
    # Another theatre's scanner, a user without the role.
    status, body = await scan(http, node, payload, gate_token(("t-nowhere",)))
    assert (status, body["error"], body["reason"]) == (403, "forbidden", "other_theatre")
    status, body = await scan(http, node, payload, gate_token((theatre,), "walt", ()))
    assert (status, body["error"]) == (403, "forbidden")
    assert await clean.fetch("west", "SELECT 1 FROM checkin_scan WHERE booking_id = $1",
                             booking) == []
    # The genuine ticket still goes in.
    status, body = await scan(http, node, payload, gate, show_id=show)
    assert (status, body["outcome"]) == (200, "admitted")


async def test_refunded_unconfirmed_and_old_reference_tickets_at_the_door(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show, confirmed = await sold(clean, http, catalog, "xena", 0)
    gate, node = gate_token((theatre_of(catalog, show),)), clean.node("west")
    # An HMAC reference (tickets drawn before signed ones) still goes in.
    assert Session.topology is not None
    reference = ticket_reference(Session.topology.secrets.get("ticket_secret"),
                                 confirmed["booking_id"])
    status, body = await scan(http, node, reference, gate)
    assert (status, body["outcome"], body["seat_ids"]) == (200, "admitted",
                                                           confirmed["seat_ids"])
    # A refunded booking's ticket refuses.
    _, other = await sold(clean, http, catalog, "yuri", 1)
    pg = await clean.pg("west")
    try:
        await pg.execute("UPDATE payment SET status = 'REFUND_PENDING' WHERE booking_id = $1",
                         other["booking_id"])
    finally:
        await pg.close()
    status, body = await scan(http, node, other["ticket"]["payload"], gate_token(
        (theatre_of(catalog, other["show_id"]),)))
    assert (status, body["error"]) == (409, "refunded"), body
    # A held, unpaid booking has no signed ticket; a minted one of ours for it refuses.
    shows = shows_in(clean, catalog, "west")
    _, held = await hold(http, node, shows[1], "zoe", seats_of(catalog, shows[1])[5:6])
    fake = ticket_keys.KeyRing(list(Session.topology.regions),
                               Session.topology.secrets.get("ticket_signing_key"))
    unpaid = ticket_keys.sign(fake.signing("west"), held["booking_id"], shows[1], "s",
                              held["seat_ids"], 0)
    status, body = await scan(http, node, unpaid, gate_token((theatre_of(catalog, shows[1]),)))
    assert (status, body["error"], body["booking_status"]) == (409, "not_confirmed",
                                                               "INITIATED"), body


async def test_an_offline_batch_reports_a_ticket_that_entered_twice(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show, confirmed = await sold(clean, http, catalog, "abe", 0)
    _, single = await sold(clean, http, catalog, "bea", 1)
    theatres = (theatre_of(catalog, show), theatre_of(catalog, single["show_id"]))
    gate = gate_token(theatres)
    now = datetime.now(UTC)
    at = [(now - timedelta(minutes=10 - i)).isoformat() for i in range(4)]
    dup = confirmed["ticket"]["payload"]
    scans = [
        {"payload": dup, "nonce": nonce(), "gate": "east-door", "scanned_at": at[0]},
        {"payload": single["ticket"]["payload"], "nonce": nonce(), "gate": "west-door",
         "scanned_at": at[1]},
        {"payload": dup, "nonce": nonce(), "gate": "west-door", "scanned_at": at[2]},
        {"payload": "forged", "nonce": nonce(), "gate": "west-door", "scanned_at": at[3]},
    ]
    async with http.post(f"{clean.node('south')}/checkin/batch", json={"scans": scans},
                         headers=gate) as resp:
        assert resp.status == 200, await resp.text()
        result = await resp.json()
    assert [r["outcome"] for r in result["results"]] == [
        "admitted", "admitted", "entered_twice", "malformed_ticket"]
    [double] = result["entered_twice"]
    assert double["booking_id"] == confirmed["booking_id"]
    assert double["first"]["gate"] == "east-door" and double["second"]["gate"] == "west-door"
    assert datetime.fromisoformat(double["first"]["at"]) == datetime.fromisoformat(at[0])
    # Uploaded again (the gate lost the answer): the same results, nothing new recorded.
    async with http.post(f"{clean.node('west')}/checkin/batch", json={"scans": scans},
                         headers=gate) as resp:
        again = await resp.json()
    assert [r["outcome"] for r in again["results"]] == [
        "admitted", "admitted", "entered_twice", "malformed_ticket"]
    assert len(again["entered_twice"]) == 1
    rows = await clean.fetch("west", "SELECT count(*) AS n FROM checkin_scan "
                             "WHERE booking_id = ANY($1)",
                             [confirmed["booking_id"], single["booking_id"]])
    assert rows[0]["n"] == 3
