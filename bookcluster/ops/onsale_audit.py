"""The audit's on-sale checks (`audit.py` runs them in each region's snapshot).

An on-sale's home PostgreSQL records the queue's order (`onsale_join.seq`, the seed
and the early joiners' count), every advance of the admission frontier
(`onsale_admit`) and which hold used each user's admission pass (`onsale_pass_use`),
so the audit can check the sale followed the queue. Violations, by check:

   `unadmitted_hold`  a hold (a booking, whatever became of it) of a show under an
                      on-sale, made after the on-sale guarded it (its creation + the
                      nodes' guard refresh + slack), whose user's pass was not used for it
                      and was not used by another hold of that user at the same time;
   `admission_order`  a pass used by a user the queue had not reached when it was used
                      (no admission step past their place before the hold, or never
                      joined, or used before the early joiners' order was drawn), or an
                      admission step that moved the frontier back;
   `admitted_twice`   a user holding a second hold under one on-sale while the hold their
                      pass was used for still ran (one admission, two shoppers).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from bookcluster.booking.onsales import GUARD_REFRESH_S
from bookcluster.booking.queue_order import place

Row = Mapping[str, Any]  # an asyncpg.Record, or a dict in the unit tests

# A node's guard may have been read just before the on-sale was made: holds within
# this long of its creation are not judged.
GUARD_SLACK_S = GUARD_REFRESH_S + 2.0

HOLDS = """
SELECT o.id AS onsale, b.id AS booking, b.user_id, b.show_id, b.created_at, b.expires_at,
       u.booking_id AS pass_booking
FROM onsale o
JOIN booking b ON b.show_id = ANY (o.show_ids)
             AND b.created_at > o.created_at + make_interval(secs => $1)
LEFT JOIN onsale_pass_use u ON u.onsale_id = o.id AND u.user_id = b.user_id
ORDER BY o.id, b.user_id, b.created_at, b.id"""
USES = """
SELECT u.onsale_id, u.user_id, u.booking_id, u.used_at, b.show_id, j.seq, o.seed, o.n_early
FROM onsale_pass_use u
JOIN onsale o ON o.id = u.onsale_id
JOIN booking b ON b.id = u.booking_id
LEFT JOIN onsale_join j ON j.onsale_id = u.onsale_id AND j.user_id = u.user_id
ORDER BY u.onsale_id, u.used_at"""
STEPS = "SELECT onsale_id, frontier, at FROM onsale_admit ORDER BY onsale_id, at, frontier"


@dataclass(frozen=True)
class Finding:
    check: str
    show_id: int | None
    detail: str


def _overlap(a: Row, b: Row) -> bool:
    return bool(a["created_at"] < b["expires_at"] and b["created_at"] < a["expires_at"])


def holds(rows: Sequence[Row]) -> list[Finding]:
    """Each hold under an on-sale is its user's pass's hold, or a violation (pure)."""
    by_user: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        by_user[(r["onsale"], r["user_id"])].append(r)
    out = []
    for (onsale, user), found in by_user.items():
        passed = next((r for r in found if r["booking"] == r["pass_booking"]), None)
        for r in found:
            if r is passed:
                continue
            if passed is not None and _overlap(r, passed):
                out.append(Finding("admitted_twice", r["show_id"],
                                   f"{user} held {r['booking']} in on-sale {onsale} while "
                                   f"the hold of their pass, {passed['booking']}, ran"))
            else:
                out.append(Finding("unadmitted_hold", r["show_id"],
                                   f"hold {r['booking']} of {user} in on-sale {onsale} "
                                   "without an admission pass"))
    return out


def order(uses: Sequence[Row], steps: Sequence[Row]) -> list[Finding]:
    """Every used pass was issued in queue order; the frontier never went back (pure)."""
    out = []
    by_onsale: dict[str, list[tuple[int, datetime]]] = defaultdict(list)
    for s in steps:
        taken = by_onsale[s["onsale_id"]]
        if taken and s["frontier"] <= max(f for f, _ in taken):
            out.append(Finding("admission_order", None,
                               f"on-sale {s['onsale_id']}: the frontier went back to "
                               f"{s['frontier']} at {s['at'].isoformat()}"))
        taken.append((s["frontier"], s["at"]))
    for u in uses:
        who = f"{u['user_id']} (hold {u['booking_id']}, on-sale {u['onsale_id']})"
        if u["seq"] is None:
            out.append(Finding("admission_order", u["show_id"],
                               f"{who} used a pass without ever joining the queue"))
            continue
        at = place(u["seq"], u["seed"], u["n_early"])
        if at is None:
            out.append(Finding("admission_order", u["show_id"],
                               f"{who} used a pass before the queue's order was drawn"))
            continue
        admitted = [t for f, t in by_onsale[u["onsale_id"]] if f > at]
        if not admitted or min(admitted) > u["used_at"]:
            when = (f"admitted only at {min(admitted).isoformat()}" if admitted
                    else "never admitted")
            out.append(Finding("admission_order", u["show_id"],
                               f"{who} at place {at + 1} used a pass at "
                               f"{u['used_at'].isoformat()}, {when}"))
    return out


async def onsale_findings(conn: asyncpg.Connection) -> list[Finding]:
    """The on-sale checks over one region's store (the caller's snapshot)."""
    return (holds(await conn.fetch(HOLDS, GUARD_SLACK_S))
            + order(await conn.fetch(USES), await conn.fetch(STEPS)))
