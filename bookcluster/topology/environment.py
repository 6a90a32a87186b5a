"""The process environment: with `secrets.py` (secrets), the only place that reads it.

Settings that are not secrets (where the store binaries are, which OS user runs
PostgreSQL) come from `BOOKCLUSTER_<NAME>`; children start with a copy of our
environment. `tests/unit/topology/test_environment.py` keeps every other module from
reading `os.environ` itself.
"""

from __future__ import annotations

import os


def setting(name: str) -> str | None:
    """`BOOKCLUSTER_<NAME>` (e.g. `setting("PG_USER")`), or None when unset or empty."""
    return os.environ.get(f"BOOKCLUSTER_{name}") or None


def inherited() -> dict[str, str]:
    """A copy of this process's environment: what a child starts with, where `PATH` is."""
    return dict(os.environ)


def otel_endpoint() -> str | None:
    """`OTEL_EXPORTER_OTLP_ENDPOINT` (traces on, `bookcluster/tracing.py`), or None."""
    return os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
