"""A short real locust run against the session cluster, then the database and the audit.

Locust runs as a subprocess: it monkey-patches the interpreter with gevent,
which must never happen inside pytest. Exit code 0 means no request failed
(expected refusals such as a 409 on a contested seat count as successes under
their own request name); 1 means a request failed or a task raised; 2 an
error in an event handler of the locustfile. Users pay through the gateway
simulator; the session cluster's workers sell the paid bookings.
"""

from __future__ import annotations

import asyncio
import csv
import sys
import time
from pathlib import Path

from bookcluster.ops.audit import run_audit
from tests.integration.conftest import Cluster

REPO = Path(__file__).resolve().parents[3]
LOCUSTFILE = REPO / "loadtests" / "locustfile.py"
LOCUST = Path(sys.executable).parent / "locust"
USERS = 20
RUN_TIME_S = 10
SETTLE_TIMEOUT_S = 15.0
LOCK = "/booking/seats/[id]/lock"
PAY = "/booking/booking/[id]/pay"
CONFIRM = "/booking/booking/[id]/confirm"
SOLD = "pay -> CONFIRMED (webhook)"  # FLOW rows: one per payment seen through to a sale
SOLD_BY_CONFIRM = "pay -> capture -> confirm -> CONFIRMED"
UNPROCESSED = "SELECT count(*) FROM payment_event WHERE processed_at IS NULL"
DOUBLE_SALES = ("SELECT show_id, seat_id, count(*) FROM booking_seat WHERE sold "
                "GROUP BY 1, 2 HAVING count(*) > 1")


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


async def run_locust(cluster: Cluster, prefix: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(LOCUST), "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "-u", str(USERS), "-r", str(USERS), "-t", f"{RUN_TIME_S}s", "--stop-timeout", "5",
        "--csv", str(prefix), "--topology", str(cluster.topology.path),
        "--hot-shows", "2", "--hot-share", "0.5", "--anxious-share", "0.5",
        cwd=prefix.parent, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), RUN_TIME_S + 50)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def settle(cluster: Cluster) -> None:
    """Wait until every webhook the gateway sent for the run's payments was processed
    (payments made just before the stop are captured after it)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    await asyncio.sleep(1.0)  # the simulator captures after 300 ms, then sends
    while True:
        left = [(await cluster.fetch(r, UNPROCESSED))[0][0] for r in cluster.topology.regions]
        if not any(left):
            break
        assert time.monotonic() < deadline, f"payment events still unprocessed: {left}"
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)  # the saga updates Redis just after its commit


async def test_load_run_sells_in_every_region_and_never_twice(clean: Cluster,
                                                              tmp_path: Path) -> None:
    assert LOCUST.exists(), (f"locust is not installed next to {sys.executable}; "
                             "install the `load` extra (pip install locust)")
    prefix = tmp_path / "locust"
    code, log = await run_locust(clean, prefix)
    print(log)  # locust's summary, shown with -rP or on failure
    assert code == 0, f"locust exited {code}:\n{log[-6000:]}"

    # locust's own _stats.csv can miss the last second; _final_stats.csv is exact.
    for kind in ("stats", "final_stats"):
        stats = {row["Name"]: row for row in read_csv(Path(f"{prefix}_{kind}.csv"))}
        for name in (LOCK, PAY, CONFIRM, SOLD, SOLD_BY_CONFIRM):
            assert int(stats[name]["Request Count"]) > 0, (kind, name, sorted(stats))
        failing = {name: row["Failure Count"] for name, row in stats.items()
                   if row["Failure Count"] != "0"}
        assert not failing, (kind, failing, read_csv(Path(f"{prefix}_failures.csv")))
    assert read_csv(Path(f"{prefix}_failures.csv")) == []
    assert read_csv(Path(f"{prefix}_final_failures.csv")) == []

    await settle(clean)
    confirmed = {}
    for region in clean.topology.regions:
        rows = await clean.fetch(region, "SELECT count(*) FROM booking WHERE status = 'CONFIRMED'")
        confirmed[region] = rows[0][0]
        assert await clean.fetch(region, DOUBLE_SALES) == [], f"seat sold twice in {region}"
    assert sum(1 for n in confirmed.values() if n) > 1, confirmed
    # Every sale locust saw is a CONFIRMED booking; a payment cut off by the stop may
    # still be sold afterwards, at most one per user.
    seen = sum(int(stats[name]["Request Count"]) for name in (SOLD, SOLD_BY_CONFIRM))
    assert seen <= sum(confirmed.values()) <= seen + USERS, (seen, confirmed)

    # Every sale is paid by a capture of exactly its amount (`unpaid_sale`), every
    # capture is a sale, and Redis agrees with PostgreSQL.
    report = await run_audit(clean.topology)
    assert report.violations == [] and report.exit_code == 0, report.violations[:20]
