"""A hold's rate-limit tokens (`WriteTokens`): what the hold script gets, how its
refusal is answered and remembered, and that they are taken once. No servers."""

from __future__ import annotations

from typing import Any

import pytest

from bookcluster.booking.limits import RateLimiter
from bookcluster.errors import RateLimited
from bookcluster.metrics import NodeMetrics
from bookcluster.seats import keys
from bookcluster.topology.model import Limits, Rate

LIMITS = Limits(user_writes=Rate(per_s=2.0, burst=7), ip_writes=Rate(per_s=3.0, burst=9))


class Limiter(RateLimiter):
    """Counts the rate-limit pipeline calls instead of making them."""

    def __init__(self) -> None:
        super().__init__(None, LIMITS, NodeMetrics("north"))  # type: ignore[arg-type]
        self.pipeline_calls: list[tuple[Any, ...]] = []

    async def check_write(self, region: str, user: str, address: str, *,
                          redis_bound: bool) -> None:
        self.pipeline_calls.append((region, user, address, redis_bound))


def test_the_script_gets_the_users_then_the_addresss_bucket() -> None:
    tokens = Limiter().tokens("north", "u1", "10.0.0.1", redis_bound=True)
    assert tokens.keys() == [keys.rate_bucket("user", "u1"), keys.rate_bucket("ip", "10.0.0.1")]
    assert tokens.args() == [2.0, 7, 3.0, 9]


@pytest.mark.parametrize(("answer", "limit", "retry_after"), [
    ([-2, 0, 2500, 1, 0], "user_writes", "3"),
    ([-2, 1, 0, 0, 400], "ip_writes", "1"),
    ([-2, 0, 1000, 0, 9000], "user_writes", "1"),  # the user's first, as the pipeline's
])
def test_a_refusal_is_a_429_and_is_remembered(answer: list[int], limit: str,
                                              retry_after: str) -> None:
    limiter = Limiter()
    tokens = limiter.tokens("north", "u1", "10.0.0.1", redis_bound=True)
    with pytest.raises(RateLimited) as refused:
        tokens.answer(answer)
    assert refused.value.details["limit"] == limit
    assert refused.value.headers == {"Retry-After": retry_after}
    with pytest.raises(RateLimited) as again:  # the node refuses the next without I/O
        limiter.precheck_write("north", "u1", "10.0.0.1")
    assert again.value.details["limit"] == limit
    limiter.precheck_write("south", "u1", "10.0.0.1")  # another region's buckets


async def test_tokens_the_script_took_are_not_taken_again() -> None:
    limiter = Limiter()
    sent = limiter.tokens("north", "u1", "10.0.0.1", redis_bound=True)
    sent.sent()
    await sent.settle()
    assert limiter.pipeline_calls == []
    unsent = limiter.tokens("north", "u2", "10.0.0.2", redis_bound=True)
    await unsent.settle()
    await unsent.settle()
    assert limiter.pipeline_calls == [("north", "u2", "10.0.0.2", True)]
