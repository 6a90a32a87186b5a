"""Access policy (`access.py`) on one node without a server: which limits each kind of
route takes, in which order it looks at a token, and whose address it counts. Requests
are aiohttp's in-memory ones; verifier, limiter and forwarder are the real ones."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bookcluster.booking.limits import RateLimiter
from bookcluster.errors import Forbidden, NodeError, RateLimited, RequestError, Unauthorized
from bookcluster.metrics import NodeMetrics
from bookcluster.node import access
from bookcluster.node.auth import OPERATOR, Identity, TokenVerifier, mint
from bookcluster.node.forward import CLIENT_HEADER, FORWARDED_HEADER, Forwarder, client_header
from bookcluster.node.typedefs import forwarder_key, limiter_key, verifier_key
from bookcluster.topology.load import parse_topology
from bookcluster.topology.model import Limits, Rate, Topology
from bookcluster.topology.secrets import generate_local
from tests.integration.support import topology_yaml

CLIENT = "198.51.100.7"
SLOW = 0.001  # tokens a second: none come back during a test


class Peer:
    """The transport of an in-memory request: its peer is CLIENT."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (CLIENT, 40_000) if name == "peername" else default


class Node:
    def __init__(self, tmp_path: Path, limits: Limits) -> None:
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        generate_local(run_dir)
        self.topology: Topology = parse_topology(
            topology_yaml(run_dir, regions=("north",), nodes=1), tmp_path / "topology.yaml")
        self.app = web.Application()
        self.app[verifier_key] = TokenVerifier(self.topology)
        self.app[limiter_key] = RateLimiter(None, limits, NodeMetrics("north"))  # type: ignore[arg-type]
        self.app[forwarder_key] = Forwarder(self.topology, "north")

    def request(self, user: str | None = None, roles: tuple[str, ...] = (),
                headers: dict[str, str] | None = None, path: str = "/x") -> web.Request:
        sent = dict(headers or {})
        if user is not None:
            sent["Authorization"] = f"Bearer {mint(self.topology, user, 60, roles)}"
        return make_mocked_request("GET", path, headers=sent, app=self.app, transport=Peer())


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path, Limits(ip_reads=Rate(SLOW, 3), user_reads=Rate(SLOW, 2),
                                 ip_rejects=Rate(SLOW, 2)))


def recorder() -> tuple[list[Any], Callable[..., Any]]:
    calls: list[Any] = []

    async def view(request: web.Request, *caller: Identity) -> web.StreamResponse:
        calls.append(caller[0] if caller else request)
        return web.Response(text="ok")

    return calls, view


async def test_public_routes_take_the_addresss_read_tokens(node: Node) -> None:
    calls, view = recorder()
    handler = access.public(view)
    assert handler.access == "public"  # type: ignore[attr-defined]
    for _ in range(3):
        await handler(node.request())
    with pytest.raises(RateLimited) as refused:
        await handler(node.request())
    assert refused.value.details["limit"] == "ip_reads" and len(calls) == 3


async def test_user_routes_give_the_view_the_tokens_caller(node: Node) -> None:
    calls, view = recorder()
    handler = access.user(view)
    assert handler.access == "user"  # type: ignore[attr-defined]
    await handler(node.request("alice"))
    assert calls == [Identity("alice", frozenset())]


async def test_user_routes_take_the_users_read_tokens_as_well(node: Node) -> None:
    calls, view = recorder()
    handler = access.user(view)
    for _ in range(2):
        await handler(node.request("alice"))
    with pytest.raises(RateLimited) as refused:
        await handler(node.request("alice"))
    assert refused.value.details["limit"] == "user_reads"
    await handler(node.request("bob"))  # another user, the same address: one read left
    with pytest.raises(RateLimited) as refused:
        await handler(node.request("carol"))
    assert refused.value.details["limit"] == "ip_reads" and len(calls) == 3


async def test_a_request_without_a_valid_token_is_refused_and_counted(node: Node) -> None:
    calls, view = recorder()
    handler = access.user(view)
    with pytest.raises(Unauthorized):
        await handler(node.request())
    with pytest.raises(Unauthorized):
        await handler(node.request(headers={"Authorization": "Bearer not.a.jwt"}))
    # The address's rejects are spent: its next token is not even looked at...
    with pytest.raises(RateLimited) as refused:
        await handler(node.request("alice"))
    assert refused.value.details["limit"] == "ip_rejects" and calls == []


async def test_a_token_verified_before_is_never_refused_for_the_addresss_rejects(
        node: Node) -> None:
    calls, view = recorder()
    handler = access.user(view)
    known = node.request("alice")
    await handler(known)
    for _ in range(2):
        with pytest.raises(Unauthorized):
            await handler(node.request())
    again = make_mocked_request("GET", "/x", headers=dict(known.headers), app=node.app,
                                transport=Peer())
    await handler(again)  # one client's bad requests do not lock out its neighbours
    assert [c.user for c in calls] == ["alice", "alice"]


async def test_operator_routes_need_the_role(node: Node) -> None:
    calls, view = recorder()
    handler = access.operator(view)
    assert handler.access == "operator"  # type: ignore[attr-defined]
    with pytest.raises(Forbidden):
        await handler(node.request("alice"))
    with pytest.raises(Unauthorized):
        await handler(node.request())
    await handler(node.request("root", (OPERATOR,)))
    assert calls == [Identity("root", frozenset({OPERATOR}))]


class Refused(RequestError):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


async def test_signed_routes_count_signature_refusals_only(node: Node) -> None:
    outcome: list[NodeError] = [Refused("invalid_input")] * 3 + [Refused("bad_signature")] * 2

    async def view(request: web.Request) -> web.StreamResponse:
        raise outcome.pop(0)

    handler = access.signed(view)
    for code in ["invalid_input"] * 3 + ["bad_signature"] * 2:  # bad bodies cost nothing
        with pytest.raises(Refused, match=code):
            await handler(node.request())
    with pytest.raises(RateLimited) as refused:  # two bad signatures: the address waits
        await handler(node.request())
    assert refused.value.details["limit"] == "ip_rejects" and outcome == []


async def test_limits_count_the_address_a_peer_node_vouched_for(node: Node) -> None:
    """Behind a forward, the client is the entry node's caller, not the entry node."""
    calls, view = recorder()
    handler = access.public(view)
    secret = node.topology.secrets.get("forward_secret").encode()
    vouched = {FORWARDED_HEADER: "south",
               CLIENT_HEADER: client_header(secret, "203.0.113.50", "GET", "/x", time.time())}
    for _ in range(3):
        request = node.request(headers=vouched)
        assert access.client_address(request) == "203.0.113.50"
        await handler(request)
    with pytest.raises(RateLimited):
        await handler(node.request(headers=vouched))
    await handler(node.request())  # CLIENT's own bucket is untouched
    assert access.client_address(node.request()) == CLIENT


async def test_an_address_a_client_names_itself_is_ignored(node: Node) -> None:
    forged = {FORWARDED_HEADER: "south",
              CLIENT_HEADER: client_header(b"guessed", "203.0.113.50", "GET", "/x",
                                           time.time())}
    request = node.request(headers=forged)
    assert access.client_address(request) == CLIENT
    assert not node.app[forwarder_key].forwarded(request)


async def test_a_home_write_refuses_a_stranger_before_routing_it(node: Node) -> None:
    calls, view = recorder()

    async def region_of(request: web.Request) -> str:
        raise AssertionError("a request without a caller was routed")

    handler = access.home_write(region_of)(view)
    assert handler.access == "user"  # type: ignore[attr-defined]
    with pytest.raises(Unauthorized):
        await handler(node.request())
    assert calls == []
