"""The API's contract (`bookcluster/node/openapi.py`): the router and the document agree
route for route, and a live node answers as the document says (schemathesis).

The fuzz runs each operation against a north node of the session cluster with a
token minted per test case (a fresh user, so the per-user write limit and hold
caps do not turn most answers into 429/409), except that a case naming one of
the bookings made for it uses that booking's owner. `test_fuzz_long` is `slow`:
`.venv/bin/pytest tests/integration/node/test_openapi.py -m slow`.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bookcluster.booking.signing import SIGNATURE_HEADER, sign_webhook
from bookcluster.node import openapi
from bookcluster.node.app import create_app
from bookcluster.node.auth import mint
from bookcluster.node.settings import NodeSettings
from bookcluster.ops.reset import reset_cluster
from bookcluster.topology.model import Topology
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.support import REGIONS, call

# What each `handler.access` must look like in the document; handlers without one
# (health, metrics, the HMAC-signed webhook) take no token either.
SECURITY = {None: [], "public": [], "user": [{"bearerAuth": []}],
            "operator": [{"bearerAuth": ["operator"]}]}
# Not fuzzed: text metrics (nothing to generate), the WebSocket (not HTTP request/response).
NOT_FUZZED = ("/metrics", "/shows/{show_id}/live")
FUZZED = [(method.upper(), path) for path, item in openapi.paths().items() if path not in NOT_FUZZED
          for method in item]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
FUZZ_SETTINGS: dict[str, Any] = {
    "deadline": None, "derandomize": True, "database": None,
    # Every example is a request to a real cluster on a busy machine: slow by nature.
    "suppress_health_check": list(HealthCheck),
}
OWNERS = 6  # users with a booking each, for the booking-id routes to find


@pytest.fixture(scope="module")
def app(cluster: Cluster) -> web.Application:
    """A node's app, built in-process (not started) for its router."""
    return create_app(NodeSettings(cluster.topology, "north", "127.0.0.1", 0))


def routed(app: web.Application) -> dict[tuple[str, str], Any]:
    """(method, path template) -> handler; aiohttp's automatic HEAD twins left out."""
    return {(r.method, r.resource.canonical): r.handler for r in app.router.routes()
            if r.method != "HEAD" and r.resource is not None}


def documented(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method.upper(), path): op for path, item in doc["paths"].items()
            for method, op in item.items()}


async def test_every_node_serves_the_same_document(cluster: Cluster,
                                                   http: aiohttp.ClientSession) -> None:
    docs = []
    for node in cluster.nodes():
        async with http.get(f"{node}/openapi.json") as resp:
            assert resp.status == 200 and resp.content_type == "application/json"
            docs.append(await resp.json())
    assert all(d == docs[0] for d in docs)
    assert docs[0]["openapi"].startswith("3.1")
    # Against the OpenAPI 3.1 meta-schema.
    schemathesis.openapi.from_dict(docs[0], config=schemathesis.Config()).validate()


async def test_document_and_router_list_the_same_routes(
        cluster: Cluster, http: aiohttp.ClientSession, app: web.Application) -> None:
    _, doc = await call(http, "GET", f"{cluster.node('north')}/openapi.json")
    in_router, in_doc = set(routed(app)), set(documented(doc))
    assert not in_router - in_doc, f"routes missing from the document: {in_router - in_doc}"
    assert not in_doc - in_router, f"documented but not routed: {in_doc - in_router}"


async def test_security_follows_handler_access(
        cluster: Cluster, http: aiohttp.ClientSession, app: web.Application) -> None:
    _, doc = await call(http, "GET", f"{cluster.node('north')}/openapi.json")
    ops = documented(doc)
    for route, handler in routed(app).items():
        access = getattr(handler, "access", None)
        assert ops[route].get("security") == SECURITY[access], (route, access)
        if access in ("user", "operator"):
            assert "401" in ops[route]["responses"], route


async def test_hold_body_takes_the_topology_seat_cap(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    _, doc = await call(http, "GET", f"{cluster.node('north')}/openapi.json")
    seat_ids = doc["components"]["schemas"]["HoldRequest"]["properties"]["seat_ids"]
    assert seat_ids["maxItems"] == cluster.topology.settings.max_seats_per_booking


# -- fuzzing -------------------------------------------------------------------
# Through schemathesis' strategies under plain Hypothesis rather than its pytest
# plugin: the plugin's lazy `from_fixture` loader (needed here, the document comes
# from a live node) writes `Node._nodeid`, which pytest 9.2 no longer has.


@dataclass
class FuzzWorld:
    """Who calls: a fresh user per case, or the owner of a booking the case names."""

    node: str
    topology: Topology
    owners: dict[str, str]  # booking id -> its user
    fresh: Iterator[int] = field(default_factory=itertools.count)

    @property
    def webhook_secret(self) -> str:
        return self.topology.secrets.get("webhook_secret")

    def token(self, case: schemathesis.Case) -> str:
        params = case.path_parameters or {}
        user = self.owners.get(str(params.get("booking_id")))
        if user is None and params.get("user_id") in self.owners.values():
            user = params["user_id"]
        return mint(self.topology, user or f"fuzz-{next(self.fresh)}", 600, ("operator",))


def hold_as(node: str, topology: Topology, user: str, show: int, seat: str) -> str:
    resp = requests.post(f"{node}/booking/seats/{show}/lock", json={"seat_ids": [seat]},
                         headers={"Authorization": f"Bearer {mint(topology, user, 600)}"},
                         timeout=10)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["booking_id"])


def realistic(doc: dict[str, Any], known: dict[str, list[Any]],
              seats: list[str]) -> dict[str, Any]:
    """A copy of the document that only allows ids that exist and real seats: random
    ids only ever find 404. (Narrowed, not widened with `anyOf`: a generator folds an
    enum into the pattern that already admits it.)"""
    doc = copy.deepcopy(doc)
    for item in doc["paths"].values():
        for op in item.values():
            for param in op.get("parameters", []):
                if param["in"] == "path" and param["name"] in known:
                    param["schema"] = {"enum": known[param["name"]]}
    schemas = doc["components"]["schemas"]
    schemas["HoldRequest"]["properties"]["seat_ids"]["items"] = {"enum": seats}
    schemas["PaymentEvent"]["properties"]["booking_id"] = {"enum": known["booking_id"]}
    return doc


@pytest.fixture(scope="module")
async def fuzz_world(cluster: Cluster, catalog: Any) -> FuzzWorld:
    """Seeded state, plus one held booking for each of a few owners."""
    await reset_cluster(cluster.topology)
    node = cluster.node("north")
    shows = [shows_in(cluster, catalog, region)[0] for region in REGIONS]
    owners = {}
    for i in range(OWNERS):  # the last seats of each show: fuzzed holds aim at the first
        show = shows[i % len(shows)]
        seat = seats_of(catalog, show)[-1 - i // len(shows)]
        owners[await asyncio.to_thread(hold_as, node, cluster.topology, f"owner-{i}", show,
                                       seat)] = f"owner-{i}"
    return FuzzWorld(node, cluster.topology, owners)


@pytest.fixture(scope="module")
def apis(fuzz_world: FuzzWorld, cluster: Cluster, catalog: Any) -> tuple[Any, Any]:
    """The document as served, and its realistic copy."""
    doc = requests.get(f"{fuzz_world.node}/openapi.json", timeout=10).json()
    shows = [shows_in(cluster, catalog, region)[0] for region in REGIONS]
    known = {"show_id": [str(s) for s in shows],
             "theatre_id": [t.id for t in catalog.theatres],
             "booking_id": sorted(fuzz_world.owners),
             "user_id": sorted(fuzz_world.owners.values())}
    seats = sorted({s for show in shows for s in seats_of(catalog, show)[:40]})
    config = schemathesis.Config.from_dict({"base-url": fuzz_world.node,
                                            "request-timeout": 10})
    return (schemathesis.openapi.from_dict(doc, config=config),
            schemathesis.openapi.from_dict(realistic(doc, known, seats), config=config))


Tally = dict[str, Counter[str]]


@pytest.fixture(scope="module")
def tallies(request: pytest.FixtureRequest) -> Iterator[dict[str, Tally]]:
    """Cases, failing cases and answers per run and operation, reported when the
    module ends (answers with -v)."""
    runs: dict[str, Tally] = {}
    yield runs
    plugins = request.config.pluginmanager
    with plugins.get_plugin("capturemanager").global_and_fixture_disabled():
        for run, counts in runs.items():
            failing = [op for op, n in counts["failures"].items() if n]
            print(f"\nschemathesis {run}: {len(counts['cases'])} operations, "
                  f"{sum(counts['cases'].values())} test cases, "
                  f"{len(failing)} operations failing {failing}")
            if request.config.get_verbosity() > 0:
                for key, n in sorted(counts["statuses"].items()):
                    print(f"  {key}: {n}")


def fuzz(apis: tuple[Any, Any], world: FuzzWorld, tally: Tally, method: str, path: str,
         max_examples: int) -> None:
    """Valid and invalid requests by the document, and valid ones about things that
    exist (`real`: those also carry a valid webhook signature)."""
    served, real = apis[0][path][method], apis[1][path][method]
    cases = st.one_of(served.as_strategy(GenerationMode.POSITIVE).map(lambda c: (c, False)),
                      served.as_strategy(GenerationMode.NEGATIVE).map(lambda c: (c, False)),
                      real.as_strategy(GenerationMode.POSITIVE).map(lambda c: (c, True)))
    label = served.label

    @settings(max_examples=max_examples, **FUZZ_SETTINGS)
    @given(generated=cases)
    def one(generated: tuple[schemathesis.Case, bool]) -> None:
        case, is_real = generated
        tally["cases"][label] += 1
        headers = {"Authorization": f"Bearer {world.token(case)}"}
        if is_real and path == "/payments/webhook":
            case.body = json.dumps(case.body).encode()  # sent as is: the bytes signed
            headers[SIGNATURE_HEADER] = sign_webhook(world.webhook_secret, case.body)
        response = case.call(headers=headers)
        tally["statuses"][f"{label} {response.status_code}"] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (Exception, BaseExceptionGroup):
            tally["failures"][label] += 1
            raise

    one()


# Header values the fuzzer does not send (it keeps headers to printable ASCII) but
# a client can; each was a 500 before.
HOSTILE = {
    "webhook, timestamp of 5000 digits": (
        "POST", "/payments/webhook", {"Bookcluster-Signature": b"t=" + b"9" * 5000 + b",v1=ab"},
        400, "malformed_signature"),
    "webhook, timestamp beyond a float": (
        "POST", "/payments/webhook", {"Bookcluster-Signature": b"t=" + b"9" * 400 + b",v1=ab"},
        400, "malformed_signature"),
    "webhook, timestamp in superscript digits": (
        "POST", "/payments/webhook", {"Bookcluster-Signature": "t=\u00b2,v1=ab".encode()},
        400, "malformed_signature"),
    "token with bytes that are not UTF-8": (
        "GET", "/me/bookings", {"Authorization": b"Bearer \xff\xfe"}, 401, "unauthorized"),
    "Idempotency-Key with bytes that are not UTF-8": (
        "POST", "/booking/booking/{booking_id}/confirm", {"Idempotency-Key": b"\xe9t\xe9"},
        422, "invalid_input"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_headers_get_a_documented_refusal(fuzz_world: FuzzWorld, name: str) -> None:
    method, path, headers, status, code = HOSTILE[name]
    booking, owner = next(iter(fuzz_world.owners.items()))
    resp = requests.request(
        method, fuzz_world.node + path.format(booking_id=booking), json={"payment_id": "pay-1"},
        headers={"Authorization": f"Bearer {mint(fuzz_world.topology, owner, 60)}", **headers},
        timeout=10)
    assert (resp.status_code, resp.json()["error"]) == (status, code), resp.text


@pytest.mark.parametrize(("field", "value"), [
    ("amount_paise", 1634838111899209728),  # found by the fuzz: beyond the integer column
    ("amount_paise", -1), ("amount_paise", True),
    ("event_id", "evt\x00"), ("payment_id", ""),  # PostgreSQL text takes no NUL
])
def test_signed_webhook_with_unstorable_fields_is_refused(fuzz_world: FuzzWorld, field: str,
                                                          value: Any) -> None:
    event = {"event_id": "evt_fuzz", "kind": "payment.captured", "payment_id": "pay_fuzz",
             "booking_id": next(iter(fuzz_world.owners)), "amount_paise": 100, field: value}
    body = json.dumps(event).encode()
    resp = requests.post(f"{fuzz_world.node}/payments/webhook", data=body, timeout=10, headers={
        SIGNATURE_HEADER: sign_webhook(fuzz_world.webhook_secret, body),
        "Content-Type": "application/json"})
    assert (resp.status_code, resp.json().get("field")) == (422, field), resp.text


@pytest.mark.parametrize(("method", "path"), FUZZED)
def test_fuzz_short(apis: tuple[Any, Any], fuzz_world: FuzzWorld, tallies: dict[str, Tally],
                    method: str, path: str) -> None:
    tally = tallies.setdefault("short", {"cases": Counter(), "failures": Counter(),
                                             "statuses": Counter()})
    fuzz(apis, fuzz_world, tally, method, path, max_examples=25)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path"), FUZZED)
def test_fuzz_long(apis: tuple[Any, Any], fuzz_world: FuzzWorld, tallies: dict[str, Tally],
                   method: str, path: str) -> None:
    tally = tallies.setdefault("long", {"cases": Counter(), "failures": Counter(),
                                             "statuses": Counter()})
    fuzz(apis, fuzz_world, tally, method, path, max_examples=1000)
