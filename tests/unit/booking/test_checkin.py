"""Check-in's pure rules (`booking/checkin.py`): bodies, the window, genuine tickets, and
that every outcome `bc_checkin` records is one the route knows."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bookcluster.booking import checkin, ticket_keys
from bookcluster.booking.signing import ticket_reference
from bookcluster.db.migrate import FUNCTIONS_DIR
from bookcluster.errors import CHECKIN_REFUSALS, InvalidInput, TicketNotValid
from bookcluster.topology.model import Settings
from bookcluster.topology.secrets import Secrets

BOOKING = "b1001-0123456789abcdef"
SECRETS = Secrets(Path("/nonexistent"), {"BOOKCLUSTER_TICKET_SECRET": "t" * 32})


def test_every_outcome_bc_checkin_records_is_passed_or_a_known_refusal() -> None:
    sql = (FUNCTIONS_DIR / "checkin.sql").read_text()
    decided = set(re.findall(r"'([a-z_]+)'", "\n".join(
        line for line in sql.splitlines() if "v_out :=" in line or "THEN '" in line)))
    decided -= {"in", "out"}
    assert {"admitted", "already_admitted", "entered_twice", "not_inside"} <= decided
    assert decided <= checkin.PASSED | set(CHECKIN_REFUSALS)


def test_the_window_opens_before_the_start_and_closes_after_it() -> None:
    settings = Settings(run_dir=Path("/x"))
    start = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)
    assert checkin.in_window(settings, start, start - timedelta(hours=1))
    assert checkin.in_window(settings, start, start + timedelta(hours=3))
    assert not checkin.in_window(settings, start, start - timedelta(hours=3))
    assert not checkin.in_window(settings, start, start + timedelta(hours=6))
    wide = Settings(run_dir=Path("/x"), checkin_opens_before_s=86400 * 30)
    assert checkin.in_window(wide, start, start - timedelta(days=20))


def test_scan_bodies_are_checked_at_the_edge() -> None:
    scan = checkin.parse_scan({"payload": "BC1.a.b", "nonce": "n-12345678", "gate": "g1"})
    assert scan.direction == "in" and scan.show_id is None
    for bad in ({"payload": "x", "nonce": "short", "gate": "g1"},
                {"payload": "x", "nonce": "n-12345678", "gate": "g1", "direction": "up"},
                {"payload": "", "nonce": "n-12345678", "gate": "g1"},
                {"payload": "x", "nonce": "n-12345678", "gate": "g 1"},
                {"payload": "x", "nonce": "n-12345678", "gate": "g1", "extra": 1}, []):
        with pytest.raises(InvalidInput):
            checkin.parse_scan(bad)
    with pytest.raises(InvalidInput):  # an offline scan says when it was made
        checkin.parse_batch({"scans": [{"payload": "x", "nonce": "n-12345678", "gate": "g"}]})
    with pytest.raises(InvalidInput):
        checkin.parse_batch({"scans": []})
    batch = checkin.parse_batch({"scans": [{"payload": "x", "nonce": "n-12345678", "gate": "g",
                                            "scanned_at": "2026-12-07T18:00:00+05:30"}]})
    assert checkin.scanned_at(batch.scans[0]) == datetime(2026, 12, 7, 12, 30, tzinfo=UTC)


def test_old_hmac_references_still_go_and_forgeries_do_not() -> None:
    ring = ticket_keys.KeyRing(("south",), "k" * 40)
    reference = ticket_reference("t" * 32, BOOKING)
    assert checkin.show_of_payload(reference, SECRETS) == 1001
    old = checkin.genuine(reference, ring.verifying(), SECRETS)
    assert (old.booking_id, old.seat_ids, old.signed) == (BOOKING, None, False)
    signed = ticket_keys.sign(ring.signing("south"), BOOKING, 1001, "s-1", ["A1"], 0)
    assert checkin.genuine(signed, ring.verifying(), SECRETS).seat_ids == ("A1",)
    for forged in (ticket_reference("u" * 32, BOOKING), BOOKING + ".0000", "hello"):
        with pytest.raises(TicketNotValid):
            checkin.genuine(forged, ring.verifying(), SECRETS)
    # A signed ticket whose booking id names another show is refused.
    other = ticket_keys.sign(ring.signing("south"), BOOKING, 1002, "s-1", ["A1"], 0)
    with pytest.raises(TicketNotValid):
        checkin.genuine(other, ring.verifying(), SECRETS)
