"""Traces (`bookcluster/tracing.py`, the `otel` extra): one forwarded hold is one trace with
spans from both regions, exported over OTLP/HTTP to a collector in this process.

The two nodes run in this process (a north node whose forwards to west go to a west node
here, through the forwarder's routes), against the session cluster's stores; the spans go
through the real exporter to a small OTLP receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from bookcluster import tracing
from bookcluster.node.app import create_app
from bookcluster.node.settings import NodeSettings
from bookcluster.stores.connections import route_key
from bookcluster.topology.model import Endpoint
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.support import call, free_ports

otel = pytest.importorskip("opentelemetry.sdk.trace",
                           reason="the otel extra is not installed: pip install -e '.[otel]'")
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: E402
    OTLPSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402

USER = "trace-user"


def _value(any_value: Any) -> Any:
    return getattr(any_value, any_value.WhichOneof("value") or "string_value")


class Collector:
    """An OTLP/HTTP trace receiver: every span it was sent, as plain dicts."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []

    async def receive(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in message.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append({
                        "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                        "parent": span.parent_span_id.hex(), "name": span.name,
                        "kind": span.kind,
                        "attributes": {a.key: _value(a.value) for a in span.attributes}})
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")


@pytest_asyncio.fixture
async def traced(cluster: Cluster) -> AsyncIterator[tuple[Collector, Any, str]]:
    """A collector, tracing on in this process, and a north node forwarding to a west node
    here. Yields (collector, provider, north node URL)."""
    from opentelemetry.sdk.trace import TracerProvider

    collector = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", collector.receive)
    collector_port, north_port, west_port = free_ports(3)
    runners = [web.AppRunner(app)]
    provider = TracerProvider(resource=Resource.create({"service.name": "bookcluster-test"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
        endpoint=f"http://127.0.0.1:{collector_port}/v1/traces")))
    topology = cluster.topology
    west = Endpoint("127.0.0.1", west_port)
    routes = {route_key("north", ep): west for ep in topology.region("west").nodes}
    runners.append(web.AppRunner(create_app(NodeSettings(topology, "west", "127.0.0.1",
                                                         west_port))))
    runners.append(web.AppRunner(create_app(NodeSettings(topology, "north", "127.0.0.1",
                                                         north_port, routes))))
    tracing.install(provider)
    try:
        for runner, port in zip(runners, (collector_port, west_port, north_port), strict=True):
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
        yield collector, provider, f"http://127.0.0.1:{north_port}"
    finally:
        tracing.uninstall()
        for runner in reversed(runners[1:]):
            await runner.cleanup()
        await asyncio.to_thread(provider.shutdown)  # its last spans reach the collector
        await runners[0].cleanup()


async def test_a_forwarded_hold_is_one_trace_across_regions(
        cluster: Cluster, traced: tuple[Collector, Any, str], http: aiohttp.ClientSession,
        catalog: Any) -> None:
    collector, provider, north = traced
    show = shows_in(cluster, catalog, "west")[-1]
    status, body = await call(http, "POST", f"{north}/booking/seats/{show}/lock", user=USER,
                              json={"seat_ids": seats_of(catalog, show, 2)[-2:]})
    assert status == 201, body
    assert body["region"] == "west"
    booking = body["booking_id"]
    assert await asyncio.to_thread(provider.force_flush, 10_000)
    servers = [s for s in collector.spans if s["name"] == "POST /booking/seats/{show_id}/lock"]
    assert {s["attributes"]["bookcluster.region"] for s in servers} == {"north", "west"}
    [trace] = {s["trace_id"] for s in servers}
    spans = [s for s in collector.spans if s["trace_id"] == trace]
    by_id = {s["span_id"]: s for s in spans}
    entry = next(s for s in servers if s["attributes"]["bookcluster.region"] == "north")
    home = next(s for s in servers if s["attributes"]["bookcluster.region"] == "west")
    forward = by_id[home["parent"]]  # the home node's span is the forward's child
    assert forward["name"] == "forward west" and by_id[forward["parent"]] == entry
    assert entry["attributes"]["bookcluster.forwarded"] == "out"
    assert home["attributes"]["bookcluster.forwarded"] == "in"
    for span in (entry, home):
        assert span["attributes"]["bookcluster.booking_id"] == booking
        assert span["attributes"]["bookcluster.show_id"] == str(show)
        assert span["attributes"]["http.response.status_code"] == 201
    names = [s["name"] for s in spans]
    assert any(n.startswith("redis hold") for n in names), names  # the home master's script
    statements = [s for s in spans if s["attributes"].get("db.system") == "postgresql"]
    assert statements, names  # the home primary's statements
    assert all(s["trace_id"] == trace for s in statements)
    # Nothing about the user: not their name, nor a token.
    assert not any(USER in str(v) or "Bearer" in str(v)
                   for s in spans for v in s["attributes"].values())
