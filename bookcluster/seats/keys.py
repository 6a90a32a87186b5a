"""Every Redis key and channel name, built in one place.

All keys of a show share the hash tag `{show:<id>}`, so one Lua script only
ever touches one cluster slot (Redis-Cluster safe).
"""

from __future__ import annotations

# Per master, region-wide: every node subscribes to it on its local replica of
# each master (publishes replicate). Tools publish RESETs of any show here
# (`bookcluster/ops/reset.py`). The seat scripts take it as ARGV[1] and publish on
# `show_changes(show)`.
SEAT_CHANGES_CHANNEL = "bookcluster:seat-changes"
SHOW_CHANGES_PREFIX = f"{SEAT_CHANGES_CHANNEL}:"


def show_changes(show_id: int) -> str:
    """The channel of one show's seat changes, which only nodes that cache the show or
    hold live sockets on it subscribe to. The scripts build it the same way:
    ARGV[1] .. ':' .. ARGV[2] (channel, show id)."""
    return f"{SHOW_CHANGES_PREFIX}{show_id}"


def show_tag(show_id: int) -> str:
    return f"{{show:{show_id}}}"


def show_holds(show_id: int) -> str:
    """Hash seat_id -> "<booking_id>|<expires_at_ms>"; an entry past its expiry is free."""
    return f"{show_tag(show_id)}:holds"


def show_booked(show_id: int) -> str:
    """Hash seat_id -> booking_id of the confirmed booking that bought it."""
    return f"{show_tag(show_id)}:booked"


def show_blocked(show_id: int) -> str:
    """Set of seat_ids that are never for sale in this show (UNAVAILABLE)."""
    return f"{show_tag(show_id)}:blocked"


def show_version(show_id: int) -> str:
    """Counter bumped by every change of the show's seats; tags caches and messages."""
    return f"{show_tag(show_id)}:version"


def show_owner(show_id: int) -> str:
    """Whether this master's region may write the show (`ownership.py`): "<epoch>" (its
    theatre is owned here since that epoch), "moving" (a move froze it) or
    "moved <region> <epoch>". Written with the PostgreSQL record it mirrors; missing
    means unknown (PostgreSQL decides alone)."""
    return f"{show_tag(show_id)}:owner"


def show_layout(show_id: int) -> str:
    """JSON of the show's screen layout for the BEST script (`best.Layout.encode`):
    rows, positions, categories, the focal point. Derived from the catalog; written by
    `layout.py` (on first use at the master, and by the reconciler)."""
    return f"{show_tag(show_id)}:layout"


def show_keys(show_id: int) -> list[str]:
    """KEYS of every seat script, in the order the scripts expect them."""
    return [show_holds(show_id), show_booked(show_id), show_blocked(show_id),
            show_version(show_id), show_owner(show_id)]


# Per master (one region): bookings whose PostgreSQL write timed out. The write
# may still land once the primary answers again; the region's sweeper expires
# them then, so a hold answered with 503 never keeps seats. Sorted set
# booking_id -> unix time it was abandoned.
ABANDONED_HOLDS = "bookcluster:abandoned-holds"


def rate_bucket(scope: str, who: str) -> str:
    """Hash {tokens, ts} of one token bucket (`scope` user or ip); its own slot."""
    return f"{{rl:{scope}:{who}}}"


# Per master: {gen, run_id}. The generation the reconciler gave this master's
# current run (`INFO server` run_id); a different run_id is a (re)start.
MIRROR_GENERATION = "bookcluster:mirror-generation"
# Versions of a generation start at gen << GENERATION_SHIFT, so they never go
# backwards for a node, whatever a restarted master forgot.
GENERATION_SHIFT = 32


# -- on-sales (`bookcluster/booking/onsale_state.py`), on the on-sale's home master ----

# Hash onsale_id -> JSON of its definition: every on-sale of this master's region.
ONSALES = "bookcluster:onsales"


def onsale_tag(onsale_id: str) -> str:
    return f"{{onsale:{onsale_id}}}"


def onsale_state(onsale_id: str) -> str:
    """Hash of the queue's counters the admitter publishes: seed, n_early, joined,
    frontier, sold_out, rate, at_ms."""
    return f"{onsale_tag(onsale_id)}:state"


def onsale_steps(onsale_id: str) -> str:
    """Sorted set of the frontier's advances: member "<frontier>:<at_ms>", score the
    frontier (places below it were admitted at at_ms)."""
    return f"{onsale_tag(onsale_id)}:steps"
