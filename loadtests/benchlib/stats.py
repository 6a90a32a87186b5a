"""Summaries of latency samples: counts, rates and percentiles (nearest rank)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None when there are none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summarize(latencies_ms: Sequence[float], elapsed_s: float | None = None) -> dict[str, Any]:
    """count, rate (per second of `elapsed_s`), mean, p50, p90, p99, max in ms."""
    values = sorted(latencies_ms)
    out: dict[str, Any] = {
        "count": len(values),
        "mean_ms": _round(sum(values) / len(values)) if values else None,
        "p50_ms": _round(percentile(values, 50)),
        "p90_ms": _round(percentile(values, 90)),
        "p99_ms": _round(percentile(values, 99)),
        "max_ms": _round(values[-1]) if values else None,
    }
    if elapsed_s is not None:
        out["elapsed_s"] = round(elapsed_s, 3)
        out["per_s"] = round(len(values) / elapsed_s, 1) if elapsed_s > 0 else None
    return out


def ratio(ours: float | None, limit: float | None) -> float | None:
    if ours is None or not limit:
        return None
    return round(ours / limit, 3)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
