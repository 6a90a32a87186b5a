"""Which origins may call a node from a browser (`node/cors.py`): the cluster's own
nodes, nobody else; and the booking page's CSP lets it connect to exactly those."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bookcluster.node.cors import cors_middleware, node_origins
from bookcluster.node.typedefs import connections_key
from bookcluster.node.views.pages import csp
from bookcluster.topology.model import Topology
from tests.unit.stores.test_connections import two_regions


def app_of(topology: Topology) -> web.Application:
    app = web.Application()
    app[connections_key] = SimpleNamespace(topology=topology)  # type: ignore[assignment]
    return app


async def answered(app: web.Application, method: str,
                   headers: dict[str, str]) -> web.StreamResponse:
    async def view(_: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True})

    request = make_mocked_request(method, "/booking/seats/1/lock", headers=headers, app=app)
    return await cors_middleware(request, view)


def test_every_node_of_every_region_is_an_origin(tmp_path: Path) -> None:
    topology = two_regions(tmp_path)
    origins = node_origins(topology)
    expected = {f"http://{n.host}:{n.port}" for r in topology.regions.values() for n in r.nodes}
    assert origins == expected and len(origins) >= 2
    assert all(o in csp(origins) for o in origins)
    assert "connect-src 'self' http://" in csp(origins)


async def test_a_node_origin_gets_cors_headers_and_a_preflight(tmp_path: Path) -> None:
    topology = two_regions(tmp_path)
    app = app_of(topology)
    origin = sorted(node_origins(topology))[0]
    preflight = await answered(app, "OPTIONS", {
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,idempotency-key"})
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == origin
    assert "Idempotency-Key" in preflight.headers["Access-Control-Allow-Headers"]
    answer = await answered(app, "POST", {"Origin": origin})
    assert answer.status == 200 and answer.headers["Access-Control-Allow-Origin"] == origin
    assert "X-Bookcluster-Home-Nodes" in answer.headers["Access-Control-Expose-Headers"]
    assert "Retry-After" in answer.headers["Access-Control-Expose-Headers"]


async def test_another_origin_gets_nothing(tmp_path: Path) -> None:
    app = app_of(two_regions(tmp_path))
    for origin in ("http://evil.example", "null", "http://127.0.0.1:1"):
        answer = await answered(app, "POST", {"Origin": origin})
        assert "Access-Control-Allow-Origin" not in answer.headers
        preflight = await answered(app, "OPTIONS", {
            "Origin": origin, "Access-Control-Request-Method": "POST"})
        assert "Access-Control-Allow-Origin" not in preflight.headers
