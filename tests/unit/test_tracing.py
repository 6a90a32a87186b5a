"""Spans and their propagation (`bookcluster/tracing.py`), with an in-memory exporter;
and that everything is a no-op while tracing is off."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bookcluster import tracing

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def test_off_everything_is_a_no_op() -> None:
    assert not tracing.enabled()
    with tracing.span("x", "client", {"a": 1}) as current:
        assert current is None
    with tracing.server_span("GET /", {"traceparent": f"00-{TRACE}-{PARENT}-01"}) as current:
        assert current is None
    headers: dict[str, str] = {}
    tracing.inject(headers)
    assert headers == {} and tracing.trace_id(None) is None
    tracing.annotate(None, {"a": 1})
    assert not tracing.configure("node", "north", None)  # no endpoint: stays off


@pytest.fixture
def spans() -> Iterator[Any]:
    sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra is not "
                              "installed")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.uninstall()
    assert not tracing.enabled()


def test_a_request_continues_its_callers_trace_and_passes_it_on(spans: Any) -> None:
    with tracing.server_span("POST /lock", {"traceparent": f"00-{TRACE}-{PARENT}-01"},
                             {"bookcluster.region": "north", "gone": None}) as server:
        assert tracing.trace_id(server) == TRACE
        with tracing.span("forward west", "client", {"bookcluster.home": "west"}):
            headers: dict[str, str] = {}
            tracing.inject(headers)
        tracing.annotate(server, {"bookcluster.booking_id": "b-1", "unset": None})
    forward, request = spans.get_finished_spans()
    assert request.parent.span_id == int(PARENT, 16)
    assert forward.parent.span_id == request.context.span_id
    assert headers["traceparent"] == \
        f"00-{TRACE}-{forward.context.span_id:016x}-01"  # the home node's parent
    assert dict(request.attributes) == {"bookcluster.region": "north",
                                        "bookcluster.booking_id": "b-1"}
    assert request.kind.name == "SERVER" and forward.kind.name == "CLIENT"


def test_without_a_caller_a_request_starts_a_trace(spans: Any) -> None:
    with tracing.server_span("GET /", {}) as server:
        assert len(tracing.trace_id(server) or "") == 32
    [span] = spans.get_finished_spans()
    assert span.parent is None
