"""The forwarder when a home node cannot be reached, without a cluster: an entry app with
a real `Forwarder`, a stub home node, and an address that never completes a connection,
all on loopback.

A request that was never sent (the connection refused, or not made within
`CONNECT_TIMEOUT_S`) goes to the next home node. If no home node took it, the 503
says nothing was applied.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web

from bookcluster.local.loopback import topology_yaml
from bookcluster.node.forward import Forwarder
from bookcluster.node.middlewares import error_middleware
from bookcluster.node.typedefs import settings_key
from bookcluster.stores import deadline
from bookcluster.stores.connections import route_key
from bookcluster.topology.load import load_topology
from bookcluster.topology.model import Endpoint, Topology

HOLD = "/booking/seats/7/lock"
STUB_ANSWER = {"booking_id": "from-the-stub"}


@pytest.fixture
def unconnectable() -> Iterator[Endpoint]:
    """An address whose accept queue is full: the kernel drops every new SYN, so a
    connection to it is neither made nor refused (nothing can be sent)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    queued = []
    for _ in range(4):  # more than the queue takes: the rest wait in SYN-SENT
        client = socket.socket()
        client.setblocking(False)
        try:
            client.connect(address)
        except BlockingIOError:
            pass
        queued.append(client)
    try:
        yield Endpoint(*address)
    finally:
        for client in queued:
            client.close()
        listener.close()


@pytest.fixture
def topology(tmp_path: Path) -> Topology:
    """Two regions of two nodes each; nothing listens at the nodes' own addresses."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "forward_secret").write_text(secrets.token_hex(32))
    path = tmp_path / "topology.yaml"
    path.write_text(topology_yaml(tmp_path, regions=("north", "south"), nodes=2))
    return load_topology(path)


async def serve(app: web.Application) -> tuple[web.AppRunner, Endpoint]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, Endpoint(host, port)


@pytest.fixture
async def stub_home() -> AsyncIterator[tuple[Endpoint, list[str]]]:
    """A home node that answers every hold 201 and notes each one it got."""
    got: list[str] = []

    async def hold(request: web.Request) -> web.Response:
        got.append(request.path)
        return web.json_response(STUB_ANSWER, status=201)

    app = web.Application()
    app.router.add_post(HOLD, hold)
    runner, endpoint = await serve(app)
    yield endpoint, got
    await runner.cleanup()


async def forward_hold(topology: Topology, routes: dict[str, Endpoint]
                       ) -> tuple[int, dict[str, str]]:
    """A south hold sent to a north entry app, which forwards it by `routes`."""
    forwarder = await Forwarder(topology, "north", routes).open()

    async def entry(request: web.Request) -> web.Response:
        with deadline.running(deadline.Deadline.after(deadline.WRITE_BUDGET_S)):
            return await forwarder.forward(request, "south")

    app = web.Application(middlewares=[error_middleware])
    app[settings_key] = SimpleNamespace(body_timeout_s=5.0)  # all read_body asks of it
    app.router.add_post(HOLD, entry)
    runner, endpoint = await serve(app)
    try:
        async with aiohttp.ClientSession() as http, http.post(
                f"http://{endpoint}{HOLD}", json={"seat_ids": ["A1"]}) as resp:
            return resp.status, await resp.json()
    finally:
        await runner.cleanup()
        await forwarder.close()


async def test_a_home_node_not_connected_in_time_is_skipped(
        topology: Topology, unconnectable: Endpoint,
        stub_home: tuple[Endpoint, list[str]]) -> None:
    first, second = topology.region("south").nodes  # the forwarder's first turn: first
    stub, got = stub_home
    status, body = await forward_hold(topology, {route_key("north", first): unconnectable,
                                                 route_key("north", second): stub})
    assert (status, body) == (201, STUB_ANSWER)
    assert got == [HOLD]


async def test_no_home_node_connected_is_a_503_that_changed_nothing(
        topology: Topology, unconnectable: Endpoint) -> None:
    routes = {route_key("north", node): unconnectable for node in topology.region("south").nodes}
    status, body = await forward_hold(topology, routes)
    assert status == 503 and body["error"] == "region_unavailable", body
    assert body["region"] == "south" and body["outcome"] == "not_applied", body
