"""How tickets and mails show money and times to people: rupees with Indian digit
grouping, and a show's start in its theatre's own time zone, named.

Pure functions: a ticket drawn by any node, or a mail written by any worker,
reads the same whatever the machine's own zone (a node in UTC once printed
"04:30 UTC" for a 10:00 am show in Bengaluru).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_ZONE = "Asia/Kolkata"  # every theatre of today's catalog
# English names, not strftime's %a/%b: those follow the process's locale.
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class UnknownTimeZone(ValueError):
    """A zone name that the IANA time zone database does not know."""

    def __init__(self, name: str, where: str = "") -> None:
        super().__init__(f"{where + ': ' if where else ''}unknown time zone {name!r}: use an "
                         f"IANA name such as {DEFAULT_ZONE!r} or 'Europe/London'")
        self.name = name


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """The IANA zone `name`; UnknownTimeZone if there is none of that name."""
    # ZoneInfo also reads relative paths ("../x") and keys with odd characters; refuse
    # those here so a name either names a zone or is an error that says so.
    if not name or name.startswith(("/", ".")) or ".." in name or name != name.strip():
        raise UnknownTimeZone(name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise UnknownTimeZone(name) from None


def indian_digits(whole: int) -> str:
    """`whole` with Indian grouping: the last three digits, then pairs (1,23,45,678)."""
    sign, digits = ("-", str(-whole)) if whole < 0 else ("", str(whole))
    head, tail = digits[:-3], digits[-3:]
    pairs: list[str] = []
    while head:
        pairs.insert(0, head[-2:])
        head = head[:-2]
    return sign + ",".join([*pairs, tail])


def rupees(paise: int) -> str:
    """An amount in paise as people read it: ₹1,23,456.00 (-₹5.50 below zero)."""
    sign, paise = ("-", -paise) if paise < 0 else ("", paise)
    return f"{sign}₹{indian_digits(paise // 100)}.{paise % 100:02d}"


def zone_label(at: datetime) -> str:
    """The zone's abbreviation at `at` (IST, BST, EDT); for zones whose database
    entry has none (it gives "+04"), the offset from UTC: UTC+04:00."""
    name = at.tzname() or ""
    if name and name[0] not in "+-":
        return name
    offset = at.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def local_time(at: datetime, zone_name: str) -> str:
    """`at` in the zone `zone_name`: "Mon 7 Dec 2026, 10:00 am IST"."""
    if at.tzinfo is None:
        raise ValueError(f"{at!r} has no time zone: whose 10 o'clock would it be?")
    local = at.astimezone(zone(zone_name))
    hour = local.hour % 12 or 12
    half = "am" if local.hour < 12 else "pm"
    return (f"{DAYS[local.weekday()]} {local.day} {MONTHS[local.month - 1]} {local.year}, "
            f"{hour}:{local.minute:02d} {half} {zone_label(local)}")
