"""The WAN proxy's plan (moved from tests/integration/cluster/test_wan.py)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from bookcluster.local import ports, wan
from bookcluster.topology.load import load_topology

DELAY_MS = 40


def test_proxy_links_never_take_a_port_of_the_topology(tmp_path: Path, monkeypatch: Any) -> None:
    """The proxy is planned before PostgreSQL and the nodes bind their ports, so a port
    free at that moment may be a node's: the plan must leave every topology port alone.
    Ports are picked from a narrow window here, 400 of its 1001 ports being nodes'."""
    low = 40_000
    monkeypatch.setattr(ports, "LOWEST", low)
    monkeypatch.setattr(ports, "_ephemeral_start", lambda: low + 1001)
    node_ports = iter(random.Random(5).sample(range(low, low + 1001), 400))
    fixed = iter(range(5000, 5100))
    lines = [f"epoch: 1\nsettings:\n  run_dir: {tmp_path / 'run'}\nregions:"]
    for region, nodes in (("north", 0), ("south", 200), ("west", 200)):
        lines.append(f"  {region}:\n    redis:\n      master: 127.0.0.1:{next(fixed)}\n"
                     "      replicas:")
        lines += [f"        {src}: 127.0.0.1:{next(fixed)}" for src in ("north", "south", "west")]
        lines.append(f"    postgres:\n      primary: 127.0.0.1:{next(fixed)}")
        own = [next(node_ports) for _ in range(nodes)] or [next(fixed)]
        lines.append("    nodes: [" + ", ".join(f"127.0.0.1:{p}" for p in own) + "]")
    path = tmp_path / "topology.yaml"
    path.write_text("\n".join(lines) + "\n")
    topology = load_topology(path)
    taken = {ep.port for region in topology.regions.values() for _, ep in region.endpoints()}
    plan = wan.plan(topology, DELAY_MS, ["north"])
    proxy = {link["listen_port"] for link in plan.links} | {plan.control_port}
    assert len(plan.links) == 400 + 2 * 3 and len(proxy) == len(plan.links) + 1
    assert not proxy & taken, sorted(proxy & taken)[:10]
