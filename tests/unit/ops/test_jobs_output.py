"""`bookcluster jobs` prints tables a person reads (its `--json` is for scripts)."""

from __future__ import annotations

from bookcluster.ops import jobs
from bookcluster.ops.table import render


def test_table_aligns_columns_and_numbers_right() -> None:
    text = render(["NAME", "N"], [["north", 1], ["south", 120]], numeric=[False, True])
    assert text.splitlines() == ["NAME     N", "----------", "north    1", "south  120"]


def test_counts_one_row_per_region_one_column_per_state() -> None:
    counts = {state: 0 for state in jobs.jobqueue.COUNT_STATES}
    text = jobs.text("counts", {"north": {**counts, "failed": 2}, "west": counts})
    header, _, north, west = text.splitlines()
    assert header.split() == ["REGION", *(s.upper() for s in jobs.jobqueue.COUNT_STATES)]
    failed = header.split().index("FAILED")
    assert north.split()[0] == "north" and north.split()[failed] == "2"
    assert west.split()[failed] == "0"
    assert "{" not in text  # no raw JSON


def test_failed_lists_each_job_with_its_region_and_a_summary() -> None:
    job = {"id": "outbox-7", "kind": "probe", "attempts": 6, "reason": "RuntimeError: no",
           "data": {"outbox_id": 7}}
    text = jobs.text("failed", {"north": {"failed": [job]}, "south": {"failed": []}})
    assert text.splitlines()[0] == "1 dead-lettered job(s): north 1, south 0"
    assert text.splitlines()[-1].split()[:4] == ["north", "outbox-7", "probe", "6"]
    assert jobs.text("failed", {"south": {"failed": []}}) == "0 dead-lettered job(s): south 0"
    assert jobs.text("replay", {"north": {"replayed": 3}}) == "north: replayed 3 job(s)"
