"""The access log (`settings.access_log`, on in the session cluster): a forwarded hold is
one JSON line at the entry node and one at the home node, sharing the trace id and naming
the booking; nothing about the user is written."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_holds import hold
from tests.integration.support import call

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
WITHIN_S = 5.0


def lines_of(cluster: Cluster, region: str) -> list[dict[str, Any]]:
    """The access-log lines of every node of `region` (JSON lines of their logs)."""
    logs = cluster.topology.settings.run_dir / "logs"
    found = []
    for path in sorted(Path(logs).glob(f"{region}.node.*.log*")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"trace_id"' in line:
                found.append(json.loads(line))
    return found


async def traced(cluster: Cluster, trace: str, count: int) -> list[dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + WITHIN_S
    while True:  # a node's log is written by its own process: give it a moment
        found = [line for region in cluster.topology.regions
                 for line in lines_of(cluster, region) if line["trace_id"] == trace]
        if len(found) >= count or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.1)


async def test_a_forwarded_hold_is_one_line_per_node_under_one_trace(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "west")[0]
    user = "access-log-user"
    status, body = await call(
        http, "POST", f"{clean.node('north')}/booking/seats/{show}/lock", user=user,
        json={"seat_ids": seats_of(catalog, show, 1)},
        headers={"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"})
    assert status == 201, body
    booking = body["booking_id"]
    lines = await traced(clean, TRACE, 2)
    entry = [line for line in lines if line["forwarded"] == "out"]
    home = [line for line in lines if line["forwarded"] == "in"]
    assert len(entry) == 1 and len(home) == 1, lines
    for line, region in ((entry[0], "north"), (home[0], "west")):
        assert line["region"] == region
        assert line["method"] == "POST" and line["status"] == 201
        assert line["route"] == "/booking/seats/{show_id}/lock"
        assert line["booking_id"] == booking and line["home"] == "west"
        assert line["duration_ms"] > 0
        assert user not in json.dumps(line)
    assert entry[0]["duration_ms"] >= home[0]["duration_ms"]  # the forward includes it


async def test_every_request_gets_a_trace_id_and_reads_name_their_booking(
        clean: Cluster, http: aiohttp.ClientSession, catalog: Any) -> None:
    show = shows_in(clean, catalog, "north")[0]
    status, body = await hold(http, clean.node("north"), show, "reader",
                              seats_of(catalog, show, 1))
    assert status == 201
    booking = body["booking_id"]
    status, _ = await call(http, "GET", f"{clean.node('north')}/booking/booking/{booking}",
                           user="reader", headers={"traceparent": "not a trace"})
    assert status == 200
    deadline = asyncio.get_running_loop().time() + WITHIN_S
    while True:
        reads = [line for line in lines_of(clean, "north")
                 if line["booking_id"] == booking and line["method"] == "GET"]
        if reads or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert len(reads) == 1
    read = reads[0]
    assert read["route"] == "/booking/booking/{booking_id}" and read["forwarded"] is None
    assert len(read["trace_id"]) == 32 and read["trace_id"] != "0" * 32
