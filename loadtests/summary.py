"""Print the key figures of a locust run from its CSV files.

    python loadtests/summary.py REPORT_DIR/locust

reads REPORT_DIR/locust_final_stats.csv and _final_failures.csv (written by
the locustfile at the end of the run; falls back to locust's own _stats.csv
and _failures.csv, which may miss the last second) and prints requests,
failures, requests/s, p50 and p99 per request name (`FLOW` rows time a whole
payment: pay's 201 to the CONFIRMED booking), then the failures by reason and
how many requests were refused with 429 (the defaults must never refuse a
load test). Needs no locust import.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path


def read_rows(prefix: str, kind: str) -> list[dict[str, str]]:
    for path in (Path(f"{prefix}_final_{kind}.csv"), Path(f"{prefix}_{kind}.csv")):
        if path.exists():
            with path.open(newline="") as f:
                return list(csv.DictReader(f))
    return []


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    prefix = argv[0]
    stats = read_rows(prefix, "stats")
    if not stats:
        print(f"no stats in {prefix}_stats.csv", file=sys.stderr)
        return 1
    width = max(len(r["Name"]) for r in stats)
    print(f"{'request':<{width}} {'count':>8} {'fail':>6} {'req/s':>8} {'p50 ms':>7} "
          f"{'p99 ms':>7}")
    for row in stats:
        label = row["Name"] if row["Type"] != "" else "TOTAL"
        print(f"{label:<{width}} {row['Request Count']:>8} {row['Failure Count']:>6} "
              f"{float(row['Requests/s']):>8.1f} {row['50%']:>7} {row['99%']:>7}")
    failures = read_rows(prefix, "failures")
    if failures:
        print("\nfailures:")
        for row in failures:
            print(f"  {row['Occurrences']:>6} x {row['Method']} {row['Name']}: {row['Error']}")
    # Errors read like CatchResponseError('429 rate_limited') (see _describe).
    limited = sum(int(row["Occurrences"]) for row in failures
                  if re.search(r"(^|\W)429 ", row["Error"]))
    print(f"\nrate limited (429): {limited}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
