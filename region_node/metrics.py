"""Prometheus metrics of a node, in a registry the app owns."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class NodeMetrics:
    def __init__(self, region: str) -> None:
        self.region = region
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bookcluster_http_requests", "HTTP requests by route, method and status",
            ["region", "route", "method", "status"], registry=self.registry)
        self.latency = Histogram(
            "bookcluster_http_request_seconds", "HTTP request latency by route",
            ["region", "route", "method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.holds = Counter(
            "bookcluster_holds", "Hold attempts by home region and outcome",
            ["region", "home", "outcome"], registry=self.registry)
        self.confirms = Counter(
            "bookcluster_confirms", "Confirm attempts by home region and outcome",
            ["region", "home", "outcome"], registry=self.registry)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(self.region, route, method, str(status)).inc()
        self.latency.labels(self.region, route, method).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
