"""Job handlers run by a region's worker. Every handler is idempotent: the
queue delivers at least once, so running a job twice must change nothing more."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bookcluster.worker.jobs import notifications, payments, probe, tickets
from bookcluster.worker.jobs.context import JobContext

Handler = Callable[[JobContext, dict[str, Any]], Awaitable[Any]]

HANDLERS: dict[str, Handler] = {
    "ticket": tickets.generate,
    "notification": notifications.send,
    "payment_event": payments.process_event,
    "refund": payments.refund,
    "probe": probe.run,
}

__all__ = ["HANDLERS", "Handler", "JobContext"]
