"""The refund cut-off and the refund's answer as SQL builds it, without a server."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from bookcluster.booking import models
from bookcluster.booking.models import RefundedBooking
from bookcluster.booking.refunds import closes_at
from bookcluster.topology.model import Settings

REFUNDS_SQL = Path(models.__file__).resolve().parents[1] / "db" / "functions" / "refunds.sql"


def test_refunds_close_the_setting_before_the_start() -> None:
    start = datetime(2026, 12, 24, 18, 30, tzinfo=UTC)
    assert closes_at(Settings(run_dir=Path("/x")), start) == start
    assert closes_at(Settings(run_dir=Path("/x"), refund_closes_before_s=1800), start) \
        == start - timedelta(minutes=30)
    assert closes_at(Settings(run_dir=Path("/x"), refund_closes_before_s=-3600), start) \
        == start + timedelta(hours=1)


def test_the_refund_answer_built_in_sql_has_the_models_fields() -> None:
    text = REFUNDS_SQL.read_text()
    block = re.search(r"answer_body := json_build_object\((.*?)\)::text", text, re.DOTALL)
    assert block is not None
    keys = re.findall(r"'([a-z_]+)'\s*,", block.group(1))
    outer = [k for k in keys if k not in ("payment_id",)]
    # The refund's inner object repeats amount_paise: the outer fields, then the inner.
    assert outer[:len(RefundedBooking.__struct_fields__)] == list(
        RefundedBooking.__struct_fields__), keys
    msgspec.convert({"booking_id": "b1001-0123456789abcdef", "user_id": "u", "show_id": 1001,
                     "region": "west", "seat_ids": ["A1"], "status": "CANCELLED",
                     "amount_paise": 500, "refund": {"payment_id": "p", "amount_paise": 500}},
                    RefundedBooking)
