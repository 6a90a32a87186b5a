"""Traces (OpenTelemetry), on when the `otel` extra is installed
(`pip install 'bookcluster[otel]'`) and `OTEL_EXPORTER_OTLP_ENDPOINT` is set; off, every
helper here is a no-op costing one check.

What a request gives, in one trace across nodes and regions: the entry node's SERVER
span (`POST /booking/seats/{show_id}/lock`), its `forward <region>` CLIENT span (the
W3C `traceparent` goes along), the home node's SERVER span, each seat script at the
home Redis master (`redis <script>`) and each PostgreSQL statement (asyncpg's
instrumentation: the SQL text, never its parameters). The worker's job spans
(`job <kind>`) carry the booking they act for. Attributes: the route, status, region,
home region, forwarded, show id and booking id; nothing about the user (no name,
token, address or body).

Entry points call `configure`; tests may `install` a provider of their own. This module
imports nothing of the package (it sits with `loops.py` at the bottom).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger(__name__)

_tracer: Any = None  # an opentelemetry Tracer once on
_propagator: Any = None


def configure(service: str, region: str, endpoint: str | None) -> bool:
    """Export spans over OTLP/HTTP to `endpoint` (the SDK reads the OTEL_* variables).
    Returns whether tracing is on."""
    if not endpoint:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but the otel extra is not installed "
                    "(pip install 'bookcluster[otel]'): no traces")
        return False
    provider = TracerProvider(resource=Resource.create(
        {"service.name": service, "bookcluster.region": region}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    install(provider)
    log.info("tracing on: spans to %s", endpoint)
    return True


def install(provider: Any) -> None:
    """Trace with `provider` (an SDK TracerProvider) from now on."""
    global _tracer, _propagator
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _tracer = provider.get_tracer("bookcluster")
    _propagator = TraceContextTextMapPropagator()
    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)  # no parameters captured


def uninstall() -> None:
    """Tracing off again (tests)."""
    global _tracer, _propagator
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    _tracer = _propagator = None
    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


def enabled() -> bool:
    return _tracer is not None


def _kind(name: str) -> Any:
    from opentelemetry.trace import SpanKind

    return getattr(SpanKind, name.upper())


@contextlib.contextmanager
def span(name: str, kind: str = "internal",
         attributes: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """A span as the current one (None when off)."""
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span(name, kind=_kind(kind),
                                       attributes=_clean(attributes or {})) as current:
        yield current


@contextlib.contextmanager
def server_span(name: str, headers: Mapping[str, str],
                attributes: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """A request's SERVER span, a child of the caller's `traceparent` if it sent one."""
    if _tracer is None:
        yield None
        return
    parent = _propagator.extract(carrier=dict(headers.items()))
    with _tracer.start_as_current_span(name, context=parent, kind=_kind("server"),
                                       attributes=_clean(attributes or {})) as current:
        yield current


def inject(headers: dict[str, str]) -> None:
    """Add the current span's `traceparent` to outgoing `headers` (nothing when off)."""
    if _propagator is not None:
        _propagator.inject(headers)


def trace_id(current: Any) -> str | None:
    """The hex trace id of span `current`, or None."""
    if current is None:
        return None
    return f"{current.get_span_context().trace_id:032x}"


def annotate(current: Any, attributes: Mapping[str, Any]) -> None:
    if current is not None:
        current.set_attributes(_clean(attributes))


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """OpenTelemetry takes no None values."""
    return {key: value for key, value in attributes.items() if value is not None}
