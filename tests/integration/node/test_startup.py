"""A node whose start-up fails part-way leaves nothing running: the app's one context
closes what the steps before the failure opened (`bookcluster/node/app.py`)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from bookcluster.node.app import create_app
from bookcluster.node.forward import Forwarder
from bookcluster.node.settings import NodeSettings
from bookcluster.node.typedefs import connections_key, listener_key
from tests.integration.conftest import Cluster

NODE_TASKS = ("listen-", "topology-poll", "live-", "availability-")


def node_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(NODE_TASKS)]


async def test_a_start_up_step_that_fails_closes_what_the_steps_before_it_opened(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    async def refused(self: Forwarder) -> Forwarder:
        raise OSError("no forwarding today")

    # The last step: the change listener, the live hub and the connections are open by then.
    monkeypatch.setattr(Forwarder, "open", refused)
    assert node_tasks() == []
    app = create_app(NodeSettings(cluster.topology, "north", "127.0.0.1", 0))
    runner = web.AppRunner(app)
    with pytest.raises(OSError, match="no forwarding today"):
        await runner.setup()
    assert listener_key in app  # it got that far
    assert node_tasks() == [], "the listener's tasks outlived the failed start-up"
    assert app[connections_key].pg_catalog().is_closing()
