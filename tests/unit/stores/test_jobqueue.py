"""The job queue's pure parts: job ids, backoff, what a claimed job says of itself.
The queue's statements run against PostgreSQL in tests/integration/node/test_jobs.py."""

from __future__ import annotations

from datetime import UTC, datetime

from bookcluster.stores.jobqueue import (
    BACKOFF_MS,
    JOB_ATTEMPTS,
    Job,
    backoff_s,
    job_id,
    row_ids,
)


def test_job_ids_name_their_outbox_row() -> None:
    assert job_id(12) == "outbox-12"
    assert row_ids(["outbox-12", "7", "outbox-", "probe-x", "outbox-1e3", "outbox-١٢",
                    "outbox-" + "9" * 19]) == [12, 7]
    assert row_ids([]) == []


def test_backoff_doubles_from_half_a_second_as_before() -> None:
    assert (JOB_ATTEMPTS, BACKOFF_MS) == (6, 500)
    pauses = [backoff_s(attempt) for attempt in range(1, JOB_ATTEMPTS)]
    assert pauses == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert backoff_s(1, 100) == 0.1 and backoff_s(0) == 0.5
    assert backoff_s(10_000) == 500 * 2 ** 20 / 1000  # bounded, no overflow


def test_a_job_knows_its_last_attempt() -> None:
    at = datetime(2026, 12, 7, tzinfo=UTC)
    first = Job(3, "ticket", {"booking_id": "b1-x", "outbox_id": 3}, 1, 6, at)
    assert first.name == "outbox-3" and not first.last_attempt
    assert Job(3, "ticket", {}, 6, 6, at).last_attempt
    assert Job(3, "ticket", {}, 7, 6, at).last_attempt
