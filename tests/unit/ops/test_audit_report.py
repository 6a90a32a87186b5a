"""The audit's printed report (moved from tests/integration/cluster/test_audit.py)."""

from __future__ import annotations

import io

from bookcluster.ops.audit import AuditReport, Violation, print_report


def test_report_lists_the_first_fifty_and_counts_the_rest() -> None:
    report = AuditReport(violations=[Violation("redis_booked", "north", 7, f"A{i}", "x")
                                     for i in range(1, 61)])
    out = io.StringIO()
    print_report(report, out)
    text = out.getvalue()
    assert "60 violation(s):" in text and "[redis_booked] north show 7 seat A50: x" in text
    assert "seat A51:" not in text and "... and 10 more" in text
    assert report.exit_code == 1
