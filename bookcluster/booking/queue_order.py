"""The on-sale queue's order and pace, pure logic (no I/O): places and admission rate.

Places. Every join gets a sequence number at the home region (`bc_onsale_join`, in
join order). When the sale starts a seed is drawn once (`bc_onsale_seal`), and the
`n_early` joins made before it are shuffled: the place of early join `seq` is
`permute(seed, n_early, seq)`, a keyed pseudo-random permutation of [0, n_early):
a seeded Fisher-Yates shuffle up to SHUFFLE_UP_TO early joins, beyond that a balanced
Feistel network over the smallest even-bit power of two >= n_early, cycle-walking
back into the range (no list of n_early places kept anywhere). Any node computes a
place from (seed, n_early, seq) alone: no per-user write at the sale's start, however
many joined. Later joins
queue behind them in arrival order: place = seq. Places count from 0; the frontier F
means places [0, F) are admitted.

Pace (`advance`): the home region's admitter moves the frontier at a rate it sets
from what it measures (`admit_rate`), never past the seats left for shoppers.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

ROUNDS = 8
# Up to this many early joins the permutation is a seeded Fisher-Yates shuffle, kept per
# (seed, n) on each node: a Feistel network over a tiny domain makes only even
# permutations (with cycle-walking, a measurable bias below a few dozen places).
SHUFFLE_UP_TO = 4096
_shuffles: dict[tuple[int, int], list[int]] = {}
_SHUFFLES_KEPT = 64


def _half_bits(n: int) -> int:
    """Bits of each Feistel half: the smallest h with 4**h >= n (at least 1)."""
    return max(1, math.ceil(max(1, n - 1).bit_length() / 2))


def _round(seed: int, rnd: int, value: int, bits: int) -> int:
    data = rnd.to_bytes(1, "big") + value.to_bytes(8, "big")
    digest = hashlib.blake2b(data, key=seed.to_bytes(8, "big", signed=True),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << bits) - 1)


def _feistel(seed: int, x: int, bits: int) -> int:
    mask = (1 << bits) - 1
    left, right = x >> bits, x & mask
    for rnd in range(ROUNDS):
        left, right = right, left ^ _round(seed, rnd, right, bits)
    return (left << bits) | right


def permute(seed: int, n: int, seq: int) -> int:
    """A bijection of [0, n) chosen by `seed` (cycle-walking a Feistel permutation of
    [0, 4**h)): the early join `seq` gets this place."""
    if not 0 <= seq < n:
        raise ValueError(f"seq {seq} outside [0, {n})")
    if n <= SHUFFLE_UP_TO:
        return _shuffled(seed, n)[seq]
    bits = _half_bits(n)
    x = _feistel(seed, seq, bits)
    while x >= n:  # the domain is < 4n, so this takes under 4 steps on average
        x = _feistel(seed, x, bits)
    return x


def _shuffled(seed: int, n: int) -> list[int]:
    order = _shuffles.get((seed, n))
    if order is None:
        if len(_shuffles) >= _SHUFFLES_KEPT:
            _shuffles.clear()
        order = list(range(n))
        random.Random(f"{seed}:{n}").shuffle(order)  # seeded by str: the same everywhere
        _shuffles[(seed, n)] = order
    return order


def place(seq: int, seed: int | None, n_early: int | None) -> int | None:
    """The place of join `seq`; None before the sale sealed the early joins' order."""
    if seed is None or n_early is None:
        return None
    return permute(seed, n_early, seq) if seq < n_early else seq


# -- pace ------------------------------------------------------------------------------

# Latency (s) of the home stores' round trips below which the admitter goes at full
# ceiling; above it, the rate falls in proportion (twice as slow: half the rate).
TARGET_LATENCY_S = 0.02
MIN_SHARE = 0.05  # a slow store still admits this share of the ceiling (if seats are left)


def admit_rate(ceiling_per_s: float, latency_s: float,
               target_s: float = TARGET_LATENCY_S) -> float:
    """Admissions a second the home region can take now: the ceiling, scaled down by
    how much slower than `target_s` its stores answer."""
    if latency_s <= target_s:
        return ceiling_per_s
    return ceiling_per_s * max(MIN_SHARE, target_s / latency_s)


@dataclass(frozen=True)
class Headroom:
    """What the home region measured for one on-sale."""

    available: int  # seats AVAILABLE in its shows
    locked: int  # seats held (a hold that may still lapse)
    active: int  # shoppers admitted within their window whose pass is not done
    joined: int  # joins so far (the queue's length plus those admitted)
    frontier: int  # places admitted so far


def sold_out(h: Headroom) -> bool:
    """No seat free and no hold that can still lapse."""
    return h.available == 0 and h.locked == 0


def advance(h: Headroom, rate_per_s: float, elapsed_s: float, carry: float) -> tuple[int, float]:
    """How many places to admit now, and the fraction carried to the next round: at
    `rate_per_s` over `elapsed_s`, no more shoppers at once than seats available, never
    past the last join."""
    budget = carry + rate_per_s * max(0.0, elapsed_s)
    room = min(h.available - h.active, h.joined - h.frontier)
    if room <= 0 or sold_out(h):
        return 0, 0.0
    step = min(int(budget), room)
    return step, (budget - step if step < room else 0.0)


def estimated_wait_s(ahead: int, rate_per_s: float) -> float | None:
    """Seconds until `ahead` more places are admitted at the current rate (None: paused)."""
    if ahead <= 0:
        return 0.0
    return ahead / rate_per_s if rate_per_s > 0 else None


POLL_S = (2.0, 30.0)  # the shortest and longest interval a position answer suggests
# Each interval is spread by up to this fraction either way: a crowd told at one moment
# (the sale's start, a page of users arriving together) does not come back at one moment.
JITTER = 0.25
# Before the sale a place does not exist yet, so polling often only costs: a client is
# told to come back at a moment spread over this long after sale_at, the longer the more
# have joined (at most SALE_POLLS_PER_S of them a second), between these bounds.
SALE_SPREAD_S = (2.0, 30.0)
SALE_POLLS_PER_S = 500.0
# ... and while the sale is farther than this, to come back after this long (spread):
# the page counts down to sale_at by itself, a poll before it learns nothing new.
PRE_SALE_POLL_S = 300.0


def jitter_of(user: str, now_ms: int) -> float:
    """A fraction in [0, 1) that looks random across users and moments, and is the same
    for the same (user, millisecond): pure, so a position answer stays a function."""
    digest = hashlib.blake2b(f"{user}:{now_ms}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64


def _spread(seconds: float, jitter: float) -> float:
    return seconds * (1 - JITTER + 2 * JITTER * jitter)


def poll_after_s(state: str, estimated_wait_s: float | None, jitter: float = 0.5, *,
                 to_sale_s: float | None = None, joined: int = 0) -> float | None:
    """How long a client should wait before its next position poll (None: stop polling).
    A tenth of the wait, within POLL_S, spread by `jitter` (a fraction in [0, 1), 0.5:
    none): near the front it polls often, far back rarely, so a million waiting pages
    cost what the sale can afford. Sold out is polled slowly (lapsing holds resume
    admission); admitted and expired are final. Before the sale (`to_sale_s`: seconds
    to sale_at, `joined` so far): every PRE_SALE_POLL_S while it is far, else once, at a
    moment spread after sale_at by how many joined, not every POLL_S[0] by everyone at
    once as the sale nears."""
    if state in ("admitted", "expired"):
        return None
    if to_sale_s is not None and state == "waiting":
        far = _spread(PRE_SALE_POLL_S, jitter)
        if to_sale_s > far:
            return round(far, 1)
        spread = min(SALE_SPREAD_S[1], max(SALE_SPREAD_S[0], joined / SALE_POLLS_PER_S))
        return round(max(POLL_S[0], to_sale_s + spread * jitter), 1)
    if state == "sold_out" or estimated_wait_s is None:
        return round(_spread(POLL_S[1] / 2, jitter), 1)
    base = min(POLL_S[1], max(POLL_S[0], estimated_wait_s / 10))
    return round(max(POLL_S[0], _spread(base, jitter)), 1)

