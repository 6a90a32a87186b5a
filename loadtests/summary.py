"""Print the key figures of a locust run from its CSV files.

    python loadtests/summary.py REPORT_DIR/locust

reads REPORT_DIR/locust_stats.csv and REPORT_DIR/locust_failures.csv (the
`--csv` prefix) and prints requests, failures, requests/s, p50 and p99 per
request name, then the failures by reason. Needs no locust import.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    prefix = argv[0]
    stats = read_rows(Path(f"{prefix}_stats.csv"))
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
    failures = read_rows(Path(f"{prefix}_failures.csv"))
    if failures:
        print("\nfailures:")
        for row in failures:
            print(f"  {row['Occurrences']:>6} x {row['Method']} {row['Name']}: {row['Error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
