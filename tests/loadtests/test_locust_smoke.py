"""A short real locust run against the session cluster, then the database checked.

Locust runs as a subprocess: it monkey-patches the interpreter with gevent,
which must never happen inside pytest. Exit code 0 means no request failed
(expected refusals such as a 409 on a contested seat count as successes under
their own request name); 1 means a request failed or a task raised; 2 an
error in an event handler of the locustfile.
"""

from __future__ import annotations

import asyncio
import csv
import sys
from pathlib import Path

from tests.conftest import Cluster

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO / "loadtests" / "locustfile.py"
LOCUST = Path(sys.executable).parent / "locust"
USERS = 20
RUN_TIME_S = 10
LOCK = "/booking/seats/[id]/lock"
CONFIRM = "/booking/booking/[id]/confirm"
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
        "--hot-shows", "2", "--hot-share", "0.5",
        cwd=prefix.parent, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), RUN_TIME_S + 50)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


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
        assert int(stats[LOCK]["Request Count"]) > 0, (kind, sorted(stats))
        assert int(stats[CONFIRM]["Request Count"]) > 0, (kind, sorted(stats))
        failing = {name: row["Failure Count"] for name, row in stats.items()
                   if row["Failure Count"] != "0"}
        assert not failing, (kind, failing, read_csv(Path(f"{prefix}_failures.csv")))
    assert read_csv(Path(f"{prefix}_failures.csv")) == []
    assert read_csv(Path(f"{prefix}_final_failures.csv")) == []

    confirmed = {}
    for region in clean.topology.regions:
        rows = await clean.fetch(region, "SELECT count(*) FROM booking WHERE status = 'CONFIRMED'")
        confirmed[region] = rows[0][0]
        assert await clean.fetch(region, DOUBLE_SALES) == [], f"seat sold twice in {region}"
    assert sum(1 for n in confirmed.values() if n) > 1, confirmed
    # Every 200 locust saw is a sale; a confirm cut off at the end may add a few more.
    seen = int(stats[CONFIRM]["Request Count"])  # from _final_stats.csv
    assert seen <= sum(confirmed.values()) <= seen + USERS, (seen, confirmed)
