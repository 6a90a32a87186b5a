"""Helpers shared by tests: free ports, small topologies, HTTP calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from cluster.loopback import REGIONS
from cluster.loopback import topology_yaml as loopback_topology
from cluster.ports import free_ports

__all__ = ["REGIONS", "free_ports"]

TEST_WEBHOOK_SECRET = "test-webhook-secret-0123456789"


def topology_yaml(run_dir: Path, **options: Any) -> str:
    """The loopback topology tests use: durable off; with workers, the gateway too."""
    if options.get("workers"):
        options.setdefault("payments_secret", TEST_WEBHOOK_SECRET)
    return loopback_topology(run_dir, **options)


async def call(session: aiohttp.ClientSession, method: str, url: str,
               **kwargs: Any) -> tuple[int, Any]:
    async with session.request(method, url, **kwargs) as resp:
        body = await resp.json(content_type=None)
        return resp.status, body


async def metric(session: aiohttp.ClientSession, node: str, name: str,
                 **labels: str) -> float:
    """Sum of a node's Prometheus samples `name` whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    async with session.get(f"{node}/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                total += sample.value
    return total
