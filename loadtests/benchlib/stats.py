"""Summaries of latency samples: counts, rates and percentiles (nearest rank)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (numpy's `inverted_cdf`: a value that was measured, never
    an interpolation); None when there are none."""
    return float(np.percentile(values, q, method="inverted_cdf")) if len(values) else None


def summarize(latencies_ms: Sequence[float], elapsed_s: float | None = None) -> dict[str, Any]:
    """count, rate (per second of `elapsed_s`), mean, p50, p90, p99, max in ms."""
    values = np.asarray(latencies_ms, dtype=float)
    p50, p90, p99 = (np.percentile(values, (50, 90, 99), method="inverted_cdf") if len(values)
                     else (None, None, None))
    out: dict[str, Any] = {
        "count": len(values),
        "mean_ms": _round(values.mean()) if len(values) else None,
        "p50_ms": _round(p50), "p90_ms": _round(p90), "p99_ms": _round(p99),
        "max_ms": _round(values.max()) if len(values) else None,
    }
    if elapsed_s is not None:
        out["elapsed_s"] = round(elapsed_s, 3)
        out["per_s"] = round(len(values) / elapsed_s, 1) if elapsed_s > 0 else None
    return out


def ratio(ours: float | None, limit: float | None) -> float | None:
    if ours is None or not limit:
        return None
    return round(ours / limit, 3)


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)
