"""`loadtests/mirror_cost.py`, tiny, against its own cluster: it runs, and what it counts
adds up (the figures themselves are for people to read, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "loadtests" / "mirror_cost.py"
TIMEOUT_S = 180


# Its own stores (23 s): on demand with -m slow, like the full benchmarks it smokes.
@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 30)
def test_mirror_cost_smoke() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--confirms", "20", "--seats", "3", "--idle", "1",
         "--nodes", "1", "--fast", "--json", "--max-seconds", str(TIMEOUT_S - 10)],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["confirms"] == 20
    assert figures["mirror_rows_per_confirm"] == 3  # one row per seat sold, no more
    # Every sale reaches the master from the node and again (a no-op) from the applier.
    assert figures["worker_mirror_scripts_per_confirm"] >= 1
    assert figures["evalsha_per_confirm_from_nodes"] >= 1
    assert figures["worker_mirror_pg_queries_per_idle_s"] > 0  # the loops really ran here
    assert figures["worker_mirror_cpu_ms_per_idle_s"] > 0
    assert figures["node_cpu_ms_per_confirm"] > 0 and figures["apply_now_client_cpu_us"] > 0
