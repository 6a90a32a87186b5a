"""Money and times as tickets and mails show them (`booking/formats.py`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from bookcluster.booking.formats import (
    UnknownTimeZone,
    indian_digits,
    local_time,
    rupees,
    zone,
)


@pytest.mark.parametrize(("whole", "text"), [
    (0, "0"), (7, "7"), (99, "99"), (999, "999"), (1000, "1,000"), (9999, "9,999"),
    (10000, "10,000"), (99999, "99,999"), (100000, "1,00,000"), (123456, "1,23,456"),
    (1234567, "12,34,567"), (10000000, "1,00,00,000"), (123456789, "12,34,56,789"),
    (-1234, "-1,234"), (-100000, "-1,00,000"),
])
def test_indian_grouping_is_three_then_pairs(whole: int, text: str) -> None:
    assert indian_digits(whole) == text


@pytest.mark.parametrize(("paise", "text"), [
    (0, "₹0.00"), (5, "₹0.05"), (99, "₹0.99"), (100, "₹1.00"), (45050, "₹450.50"),
    (12345600, "₹1,23,456.00"), (100000, "₹1,000.00"), (10000000000, "₹10,00,00,000.00"),
    (-550, "-₹5.50"), (-12345678, "-₹1,23,456.78"),
])
def test_rupees_from_paise(paise: int, text: str) -> None:
    assert rupees(paise) == text


SHOW = datetime(2026, 12, 7, 4, 30, tzinfo=UTC)  # a 10:00 am show in India


def test_india_has_no_daylight_saving_and_reads_ist() -> None:
    assert local_time(SHOW, "Asia/Kolkata") == "Mon 7 Dec 2026, 10:00 am IST"
    # Half a year later, the same wall clock: India keeps one offset all year.
    assert local_time(SHOW + timedelta(days=182), "Asia/Kolkata") == \
        "Mon 7 Jun 2027, 10:00 am IST"


def test_the_same_instant_anywhere_reads_the_same() -> None:
    """Whatever zone the datetime comes in (asyncpg gives UTC), the theatre's time shows."""
    elsewhere = SHOW.astimezone(timezone(timedelta(hours=-7)))
    assert local_time(elsewhere, "Asia/Kolkata") == local_time(SHOW, "Asia/Kolkata")


def test_a_zone_with_daylight_saving_changes_name_and_offset() -> None:
    winter = datetime(2026, 1, 15, 19, 30, tzinfo=UTC)
    summer = datetime(2026, 7, 15, 18, 30, tzinfo=UTC)
    assert local_time(winter, "Europe/London") == "Thu 15 Jan 2026, 7:30 pm GMT"
    assert local_time(summer, "Europe/London") == "Wed 15 Jul 2026, 7:30 pm BST"
    assert local_time(summer, "America/New_York") == "Wed 15 Jul 2026, 2:30 pm EDT"


def test_around_the_clock() -> None:
    midnight = datetime(2026, 12, 6, 18, 30, tzinfo=UTC)
    assert local_time(midnight, "Asia/Kolkata") == "Mon 7 Dec 2026, 12:00 am IST"
    assert local_time(midnight + timedelta(hours=12), "Asia/Kolkata") == \
        "Mon 7 Dec 2026, 12:00 pm IST"
    assert local_time(midnight + timedelta(hours=23, minutes=5), "Asia/Kolkata") == \
        "Mon 7 Dec 2026, 11:05 pm IST"


def test_a_zone_without_an_abbreviation_shows_its_offset() -> None:
    assert local_time(SHOW, "Asia/Dubai") == "Mon 7 Dec 2026, 8:30 am UTC+04:00"
    assert local_time(SHOW, "Asia/Kathmandu") == "Mon 7 Dec 2026, 10:15 am UTC+05:45"
    assert local_time(SHOW, "America/Sao_Paulo") == "Mon 7 Dec 2026, 1:30 am UTC-03:00"


@pytest.mark.parametrize("name", ["Asia/Calcutta_", "Mars/Olympus", "", "IST ", "../etc/passwd",
                                  "/usr/share/zoneinfo/UTC", "Asia/../UTC"])
def test_an_unknown_zone_is_a_clear_error(name: str) -> None:
    with pytest.raises(UnknownTimeZone, match="unknown time zone"):
        zone(name)


def test_a_time_without_a_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        local_time(datetime(2026, 12, 7, 10, 0), "Asia/Kolkata")
