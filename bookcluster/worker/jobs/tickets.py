"""The `ticket` job a confirm queues (`bc_sell`): nothing to do any more.

A ticket is drawn on its first download and stored then (`booking/tickets.py`):
the booking row and the catalog hold everything it shows, and its reference is
an HMAC of the booking id, so the job records nothing and reads nothing. Drawing
it here cost 1.33 ms of worker CPU per confirm (48 % of a draining worker's
samples) for pictures most of which are not downloaded right away. The handler
stays so the confirms' jobs, queued now or before this change, are taken and done.
"""

from __future__ import annotations

from typing import Any

from bookcluster.worker.jobs.context import JobContext


async def generate(ctx: JobContext, data: dict[str, Any]) -> str:
    return "drawn on first download"
