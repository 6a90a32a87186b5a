"""Helpers shared by tests: free ports, small topologies, HTTP calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from cluster.health import scrape_metric
from cluster.loopback import REGIONS
from cluster.loopback import topology_yaml as loopback_topology
from cluster.ports import free_ports

__all__ = ["REGIONS", "free_ports"]

def topology_yaml(run_dir: Path, **options: Any) -> str:
    """The loopback topology tests use: durable off; with workers, the gateway too."""
    if options.get("workers"):
        options.setdefault("payments", True)
    return loopback_topology(run_dir, **options)


async def call(session: aiohttp.ClientSession, method: str, url: str,
               **kwargs: Any) -> tuple[int, Any]:
    async with session.request(method, url, **kwargs) as resp:
        body = await resp.json(content_type=None)
        return resp.status, body


async def metric(session: aiohttp.ClientSession, node: str, name: str,
                 **labels: str) -> float:
    """Sum of a node's Prometheus samples `name` whose labels include `labels`."""
    return await scrape_metric(session, node, name, **labels)
