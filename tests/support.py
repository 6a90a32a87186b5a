"""Helpers shared by tests: free ports, small topologies, HTTP calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from cluster.ports import free_ports

__all__ = ["free_ports"]

REGIONS = ("north", "south", "west")
TEST_WEBHOOK_SECRET = "test-webhook-secret-0123456789"


def topology_yaml(run_dir: Path, *, regions: tuple[str, ...] = REGIONS, nodes: int = 2,
                  standby: tuple[str, ...] = (), theatres: dict[str, str] | None = None,
                  extra_settings: str = "", workers: bool = False) -> str:
    per_region = 1 + len(regions) + 1 + nodes + (1 if standby else 0) + 1
    ports = iter(free_ports(per_region * len(regions) + 1))
    out = [f"epoch: 1\nsettings:\n  run_dir: {run_dir}\n  durable: false\n{extra_settings}",
           "regions:"]
    for region in regions:
        out.append(f"  {region}:\n    redis:\n      master: 127.0.0.1:{next(ports)}\n"
                   "      replicas:")
        out += [f"        {src}: 127.0.0.1:{next(ports)}" for src in regions]
        out.append(f"    postgres:\n      primary: 127.0.0.1:{next(ports)}")
        if region in standby:
            out.append(f"      standby: 127.0.0.1:{next(ports)}")
        out.append("    nodes: [" + ", ".join(f"127.0.0.1:{next(ports)}"
                                               for _ in range(nodes)) + "]")
        if workers:
            out.append(f"    worker: 127.0.0.1:{next(ports)}")
    if workers:
        out.append(f"payments:\n  gateway: 127.0.0.1:{next(ports)}\n"
                   f"  secret: {TEST_WEBHOOK_SECRET}\n  capture_delay: 300ms")
    if theatres:
        out.append("theatres:")
        out += [f"  {t}: {r}" for t, r in theatres.items()]
    return "\n".join(out) + "\n"


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
