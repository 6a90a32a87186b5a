"""The web pages' routes without a browser: static files, the development sign-in, and
the operator overview (`/ops/overview`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import replace

import aiohttp
import pytest
import yaml
from aiohttp import web

from bookcluster.local.launcher import REPO_ROOT, all_loopback
from bookcluster.node.app import create_app
from bookcluster.node.overview import audit_report_path
from bookcluster.node.settings import NodeSettings
from bookcluster.ops.audit import AuditReport, save_last
from bookcluster.topology.model import Endpoint
from tests.integration.conftest import Cluster
from tests.integration.support import bearer, call, free_ports


async def test_pages_and_their_files_are_served(cluster: Cluster,
                                                http: aiohttp.ClientSession) -> None:
    node = cluster.node("south")
    for path, kind in (("/", "text/html"), ("/ops", "text/html"), ("/scan", "text/html"),
                       ("/static/book.js", "text/javascript"),
                       ("/static/jsQR.js", "text/javascript"),
                       ("/static/jsQR-LICENSE.txt", "text/plain"),
                       ("/static/style.css", "text/css")):
        async with http.get(f"{node}{path}") as resp:
            assert resp.status == 200, path
            assert resp.content_type == kind
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
    for name in ("nope.js", "..%2Fapp.py", "%2e%2e%2fsettings.py", "__init__.py"):
        status, body = await call(http, "GET", f"{node}/static/{name}", anonymous=True)
        assert status == 404 and body["error"] == "not_found", name


async def test_dev_sign_in_gives_working_tokens(cluster: Cluster,
                                                http: aiohttp.ClientSession) -> None:
    node = cluster.node("west")
    status, signed = await call(http, "POST", f"{node}/auth/dev-sign-in", anonymous=True,
                                json={"user": "devi"})
    assert status == 200 and signed["user"] == "devi" and signed["roles"] == []
    headers = {"Authorization": f"Bearer {signed['token']}"}
    async with http.get(f"{node}/me/bookings", headers=headers) as resp:
        assert resp.status == 200 and (await resp.json())["user_id"] == "devi"
    async with http.get(f"{node}/ops/overview", headers=headers) as resp:
        assert resp.status == 403
    status, body = await call(http, "POST", f"{node}/auth/dev-sign-in", anonymous=True,
                              json={"user": "ops", "roles": ["operator"]})
    assert status == 200 and body["roles"] == ["operator"]
    async with http.get(f"{node}/ops/seat-cache",
                        headers={"Authorization": f"Bearer {body['token']}"}) as resp:
        assert resp.status == 200
    for bad in ({"user": "no spaces"}, {"user": "x", "roles": ["admin"]}, {"roles": []}, []):
        status, body = await call(http, "POST", f"{node}/auth/dev-sign-in", anonymous=True,
                                  json=bad)
        assert status == 422 and body["error"] == "invalid_input", bad


async def test_dev_sign_in_is_off_unless_the_launcher_turns_it_on(cluster: Cluster) -> None:
    port = free_ports(1)[0]  # a node of the same topology, started without --dev-sign-in
    runner = web.AppRunner(create_app(NodeSettings(cluster.topology, "north", "127.0.0.1",
                                                   port)))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        async with aiohttp.ClientSession() as http:
            status, body = await call(http, "POST", f"http://127.0.0.1:{port}/auth/dev-sign-in",
                                      anonymous=True, json={"user": "mallory",
                                                            "roles": ["operator"]})
    finally:
        await runner.cleanup()
    assert status == 404 and body["error"] == "not_found" and "token" not in body


async def test_overview_probes_every_process(cluster: Cluster,
                                             http: aiohttp.ClientSession) -> None:
    node = cluster.node("north")
    async with http.get(f"{node}/ops/overview") as resp:
        assert resp.status == 401
    save_last(cluster.topology, AuditReport())
    try:
        for _ in range(50):  # a worker publishes its gauges a second after it starts
            async with http.get(f"{node}/ops/overview",
                                headers=bearer("root", ("operator",))) as resp:
                assert resp.status == 200
                data = await resp.json()
            if all("outbox_pending" in r["worker"] for r in data["regions"].values()):
                break
            await asyncio.sleep(0.1)
    finally:
        audit_report_path(cluster.topology).unlink()
    assert data["epoch"] == cluster.topology.epoch
    assert set(data["regions"]) == set(cluster.topology.regions)
    for name, region in data["regions"].items():
        spec = cluster.topology.region(name)
        assert region["redis_master"] == {**region["redis_master"], "up": True, "role": "master",
                                          "address": str(spec.redis_master)}
        assert {r["source"] for r in region["redis_replicas"]} == set(spec.redis_replicas)
        assert all(r["up"] and r["link"] == "up" and r["lag_bytes"] >= 0
                   for r in region["redis_replicas"])
        assert region["pg_primary"]["up"] and region["pg_primary"]["role"] == "primary"
        assert [n["address"] for n in region["nodes"]] == [str(ep) for ep in spec.nodes]
        assert all(n["up"] and n["ready"] for n in region["nodes"]), region["nodes"]
        assert region["worker"]["up"] and "outbox_pending" in region["worker"]
        assert set(region["worker"]["queue"]) >= {"waiting", "failed"}
        assert region["redis_master_now"]["up"], region["redis_master_now"]
    standby = data["regions"]["north"]["pg_standby"]
    assert standby["up"] and standby["role"] == "standby" and standby["lag_bytes"] >= 0
    # Each region's Redis log and Patroni history answered (what they hold depends on
    # what the session did before: tests/integration/web/test_operator_page.py fails over).
    assert data["failovers"]["available"] is True and data["failovers"]["unreachable"] == []
    assert data["moves"]["available"] is True and data["moves"]["items"] == []
    assert data["audit"]["available"] is True and data["audit"]["exit_code"] == 0
    assert json.loads(json.dumps(data)) == data


def test_only_a_loopback_local_cluster_turns_dev_sign_in_on(cluster: Cluster) -> None:
    shipped = yaml.safe_load((REPO_ROOT / "topology.yaml").read_text())
    assert shipped["auth"].get("dev_sign_in", False) is False
    assert all_loopback(cluster.topology)  # so the session's nodes serve it (tests/integration/web)
    north = cluster.topology.region("north")
    public = replace(north, nodes=(*north.nodes, Endpoint("10.1.2.3", 8101)))
    assert not all_loopback(replace(cluster.topology,
                                    regions={**cluster.topology.regions, "north": public}))


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "node-1.example"])
def test_a_node_bound_elsewhere_refuses_dev_sign_in(cluster: Cluster, host: str) -> None:
    topology = cluster.topology
    started = subprocess.run(
        [sys.executable, "-m", "bookcluster.node", "--topology", str(topology.path),
         "--run-dir", str(topology.settings.run_dir), "--region", "north", "--host", host,
         "--port", str(free_ports(1)[0]), "--dev-sign-in"],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True,
        timeout=60, check=False)
    assert started.returncode == 2, started.stderr
    assert f"only a node bound to loopback may serve it, not one bound to {host}" \
        in started.stderr
