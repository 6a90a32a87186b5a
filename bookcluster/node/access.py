"""Who may call a route and where it runs, decided once per route by a decorator.

- `public`: anyone (catalog, seat maps, live sockets), within the per-address read limit.
- `user`: a valid bearer token; the view gets the caller's `Identity`; a read, within
  the per-user and the per-address read limits.
- `operator`: a token with the `operator` role.
- `signed`: a caller that proves itself by a signature (the gateway's webhook).
A request refused for its token or signature counts against its address
(`limits.ip_rejects`); an address over that limit is refused (429) before its
token (unless this node verified it before) or signature is looked at.
- `home_write(region_of)`: a `user` route that changes a home region's state. A
  node of another region forwards it (one WAN round trip); the home node
  applies the write rate limits, then runs the view. `redis_bound` routes (a
  hold) cannot work without the home Redis master, so its outage is a 503
  at once instead of a second timeout. The write runs to one deadline
  (`deadline.py`), started here. A `lease` route (a hold) that fails with an
  unknown outcome says by when a hold it may have made lapses. On the home
  node a write runs once admitted (`admission.py`: a bounded number at once,
  a bounded queue, a bounded share per user and turns per address); a user or
  address the home master refused moments ago is refused before it queues. A
  route's `turn` (holds: one per seat at a time on each node, the others
  refused without a write if the seats went: `refusals.py`) is taken before
  the forward, so a refusal costs neither a forward nor a write. A hold's rate-limit
  tokens are taken by its hold script (`tokens_in_view`: one round trip to the master,
  not two); a hold that ends before that script takes them after, as before.
  A write the home region refuses as MOVED (`ownership.py`: the theatre moved, or
  our map is older than its owner's epoch) changed nothing: the node adopts the
  newest epoch from its own region's store (`topology_swap.py`) and routes it
  once more, so the client sees one normal answer.
The decorators record the policy on the handler (`handler.access`), which the
OpenAPI document is checked against.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime

from aiohttp import web

from bookcluster.booking.limits import WriteTokens
from bookcluster.errors import NodeError, Unauthorized
from bookcluster.node.auth import OPERATOR, Identity, TokenVerifier
from bookcluster.node.typedefs import (
    admission_key,
    bookings_key,
    forwarder_key,
    limiter_key,
    settings_key,
    swap_key,
    verifier_key,
)
from bookcluster.stores import deadline
from bookcluster.topology.errors import Moved, RegionUnavailable

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UserView = Callable[[web.Request, Identity], Awaitable[web.StreamResponse]]
RegionOf = Callable[[web.Request], Awaitable[str]]
Turn = Callable[[web.Request, Identity], AbstractAsyncContextManager[None]]
# The rate-limit tokens of a `tokens_in_view` write on its home node.
WRITE_TOKENS: web.RequestKey[WriteTokens] = web.RequestKey("write_tokens")


# The webhook's refusals for its signature (`signing.py`), counted like a bad token.
SIGNATURE_REFUSALS = frozenset({"missing_signature", "malformed_signature", "stale_webhook",
                                "bad_signature"})


def identity(request: web.Request) -> Identity:
    verifier: TokenVerifier = request.app[verifier_key]
    limiter, address = request.app[limiter_key], client_address(request)
    header = request.headers.get("Authorization")
    if not verifier.known(header):  # a token that passed before is never refused here
        limiter.check_rejecting(address)
    try:
        return verifier.identity(header)
    except Unauthorized:
        limiter.rejected(address)
        raise


def client_address(request: web.Request) -> str:
    return request.app[forwarder_key].client_address(request)


def public(view: Handler) -> Handler:
    @functools.wraps(view)
    async def handler(request: web.Request) -> web.StreamResponse:
        request.app[limiter_key].check_read(client_address(request))
        return await view(request)

    handler.access = "public"  # type: ignore[attr-defined]
    return handler


def user(view: UserView) -> Handler:
    @functools.wraps(view)
    async def handler(request: web.Request) -> web.StreamResponse:
        caller = identity(request)
        request.app[limiter_key].check_user_read(caller.user, client_address(request))
        return await view(request, caller)

    handler.access = "user"  # type: ignore[attr-defined]
    return handler


def operator(view: UserView) -> Handler:
    @functools.wraps(view)
    async def handler(request: web.Request) -> web.StreamResponse:
        caller = identity(request)
        caller.require(OPERATOR)
        return await view(request, caller)

    handler.access = "operator"  # type: ignore[attr-defined]
    return handler


def signed(view: Handler) -> Handler:
    """No token: the view checks a signature. Its refusals count against the address."""
    @functools.wraps(view)
    async def handler(request: web.Request) -> web.StreamResponse:
        limiter, address = request.app[limiter_key], client_address(request)
        limiter.check_rejecting(address)
        try:
            return await view(request)
        except NodeError as exc:
            if exc.code in SIGNATURE_REFUSALS:
                limiter.rejected(address)
            raise

    return handler


def home_write(region_of: RegionOf, *, redis_bound: bool = False, lease: bool = False,
               turn: Turn | None = None,
               tokens_in_view: bool = False) -> Callable[[UserView], Handler]:
    """`tokens_in_view`: the view takes the write's rate-limit tokens itself (a hold, in
    its hold script: `write_tokens`); any it did not take are taken after it, through
    the rate-limit pipeline, so every write on the route takes them once."""
    def wrap(view: UserView) -> Handler:
        @functools.wraps(view)
        async def handler(request: web.Request) -> web.StreamResponse:
            limit = deadline.of_request(request.headers.get(deadline.HEADER))
            with deadline.running(limit):
                try:
                    return await _home_write(request, view, region_of, redis_bound, turn,
                                             tokens_in_view)
                except RegionUnavailable as exc:
                    if not lease or exc.outcome != "unknown" or "lapses_by" in exc.known:
                        raise
                    # No hold starts after the deadline, and none outlives its TTL.
                    ttl_s = request.app[settings_key].topology.settings.hold_ttl_s
                    lapses = datetime.fromtimestamp(limit.at + ttl_s, UTC).isoformat()
                    raise exc.unknown(lapses_by=lapses) from exc

        handler.access = "user"  # type: ignore[attr-defined]
        return handler

    return wrap


async def _home_write(request: web.Request, view: UserView, region_of: RegionOf,
                      redis_bound: bool, turn: Turn | None,
                      tokens_in_view: bool) -> web.StreamResponse:
    caller = identity(request)  # a stranger is refused here, not a WAN hop later
    try:
        return await _turn_and_route(request, view, region_of, redis_bound, turn, caller,
                                     tokens_in_view)
    finally:  # whatever it did, the caller's next booking list here is read afresh
        request.app[bookings_key].wrote(caller.user)


async def _turn_and_route(request: web.Request, view: UserView, region_of: RegionOf,
                          redis_bound: bool, turn: Turn | None, caller: Identity,
                          tokens_in_view: bool) -> web.StreamResponse:
    region = await region_of(request)
    # A user or address the home master refused moments ago waits in no turn either.
    request.app[limiter_key].precheck_write(region, caller.user, client_address(request))
    async with turn(request, caller) if turn is not None else contextlib.nullcontext():
        try:
            return await _serve_or_forward(request, view, caller, region, redis_bound,
                                           tokens_in_view)
        except Moved as exc:
            # Our map is older than the theatre's ownership: a move flipped it, or its
            # owner took it at a newer epoch. Nothing was done. Take the newest epoch
            # from our region's store and route once more. A forwarded request whose
            # new home is not ours goes back to its entry node (421), which does the
            # same; one whose new home is ours (its entry node knew the move before we
            # did) is served here.
            swap = request.app[swap_key]
            before = swap.topology.epoch
            await swap.adopt()
            log.info("write to %s answered MOVED (%s); epoch %d -> %d", request.path, exc,
                     before, swap.topology.epoch)
            forwarder = request.app[forwarder_key]
            region = await region_of(request)
            if forwarder.forwarded(request) and region != forwarder.local_region:
                raise
            return await _serve_or_forward(request, view, caller, region, redis_bound,
                                           tokens_in_view)


async def _serve_or_forward(request: web.Request, view: UserView, caller: Identity,
                            region: str, redis_bound: bool,
                            tokens_in_view: bool) -> web.StreamResponse:
    forwarder = request.app[forwarder_key]
    if forwarder.needed(request, region):
        return await forwarder.forward(request, region)
    limiter, address = request.app[limiter_key], client_address(request)
    limiter.precheck_write(region, caller.user, address)  # no I/O, no queue place
    async with request.app[admission_key].admit(caller.user, address):
        if not tokens_in_view:
            await limiter.check_write(region, caller.user, address, redis_bound=redis_bound)
            return await view(request, caller)
        tokens = request[WRITE_TOKENS] = limiter.tokens(region, caller.user, address,
                                                        redis_bound=redis_bound)
        try:
            response = await view(request, caller)
        except Exception:
            # Over the limit: the 429 it would have been first. A store outage now
            # leaves the write's own answer.
            with contextlib.suppress(RegionUnavailable):
                await tokens.settle()
            raise
        await tokens.settle()
        return response


def write_tokens(request: web.Request) -> WriteTokens:
    """The rate-limit tokens of a `tokens_in_view` write, for its view to take."""
    return request[WRITE_TOKENS]
