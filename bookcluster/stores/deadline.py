"""The one deadline of a write, from the client's first byte to its answer.

A client waits `WRITE_BUDGET_S` for any write. The node that receives the
request starts that clock (`access.home_write`); when it forwards the write
it tells the home node the absolute time by which an answer must be back,
less `REPLY_MARGIN_S` for the answer's way back. The home node takes the
earlier of that and its own budget, and every store call of the write gets
only the time left (`HomeRegion`):
- no step (Redis script, PostgreSQL statement) starts after the deadline;
- a transaction commits only before it: past it, it rolls back;
so a home node that was slow (paused, partitioned, overloaded) gives up on
its own instead of applying a write whose caller has already been told 503.
What can still land late is a statement already on its way when the
deadline passed; `RegionUnavailable.outcome` says so ("unknown") and the
caller's retry with the same Idempotency-Key learns what happened.

A hold script also carries the deadline to the master (`script_ms`; sooner
if the node stops waiting for its answer sooner): one that starts there after
it holds nothing (`seats/scripts.py`, return code -4),
so a script queued behind a slow or paused master cannot leave seats held,
with no PostgreSQL record, after its caller was told 503. The master compares
with its own clock, `CLOCK_MARGIN_S` earlier than the node's deadline: a
master whose clock is behind the node's by less than the margin still refuses
every script that starts past the deadline (one ahead refuses a little early,
which costs the write at most that much of its budget). On loopback the two
share one clock.

Absolute times cross hosts, so their clocks must agree to well within the
margins (NTP does). Background jobs have no request: each of their store calls
gets `STORE_BUDGET_S` of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from bookcluster.topology.errors import RegionUnavailable

WRITE_BUDGET_S = 1.9  # the whole answer of a write, forwarding included
REPLY_MARGIN_S = 0.25  # kept back at each forward for the answer's way back
STORE_BUDGET_S = 1.2  # one store call of a job, or of a clean-up after a request
CLOCK_MARGIN_S = 0.05  # the master's clock may lag the node's by this (`script_ms`)
HEADER = "X-Bookcluster-Deadline"  # unix time in ms by which the answer is due


@dataclass(frozen=True)
class Deadline:
    at: float  # unix time, seconds

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.time() + seconds)

    def remaining(self) -> float:
        return self.at - time.time()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def left_for(self, region: str, step: str) -> float:
        """Seconds left for `step`; RegionUnavailable (nothing sent) if none are."""
        left = self.remaining()
        if left <= 0:
            raise RegionUnavailable(region, f"{step}: deadline passed before it was sent")
        return left

    def script_ms(self, wait_s: float | None = None) -> int:
        """The master's clock time (unix ms) after which a hold script of this write
        changes nothing: the deadline, or `wait_s` from now if the caller stops waiting
        for the answer sooner (the client's socket timeout: it answers 503 then), less
        `CLOCK_MARGIN_S` for the clocks' skew."""
        end = self.at if wait_s is None else min(self.at, time.time() + wait_s)
        return int((end - CLOCK_MARGIN_S) * 1000)

    def forwarded(self) -> str:
        """The header value for a forward: the home node answers before this."""
        return str(int((self.at - REPLY_MARGIN_S) * 1000))


_current: ContextVar[Deadline | None] = ContextVar("deadline", default=None)


def of_request(header: str | None) -> Deadline:
    """This node's budget for a write, shortened to a forwarder's deadline if one came.
    A header can only make the deadline earlier, so a client sending one itself harms
    no one but itself."""
    own = Deadline.after(WRITE_BUDGET_S)
    if header is None or not header.isascii() or not header.isdigit() or len(header) > 15:
        return own
    return Deadline(min(own.at, int(header) / 1000))


def current() -> Deadline:
    """The running request's deadline, or a fresh store budget outside a request."""
    return _current.get() or Deadline.after(STORE_BUDGET_S)


@contextmanager
def running(deadline: Deadline | None) -> Iterator[None]:
    """Store calls inside the block work to `deadline` (None: each its own budget,
    for clean-up that must run after a request gave up)."""
    token = _current.set(deadline)
    try:
        yield
    finally:
        _current.reset(token)
