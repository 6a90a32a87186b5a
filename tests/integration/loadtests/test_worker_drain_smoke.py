"""`loadtests/worker_drain.py`, tiny: every confirm's jobs ran and the backlog emptied.

It runs as a subprocess with its own cluster (workers on). Asserted is what the
figures rest on, never a rate: each flow was confirmed, each confirm's ticket,
notification and payment event ran on the booking's home worker, nothing was
left in the outbox or the queue, and every figure of the summary is there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "loadtests" / "worker_drain.py"
TIMEOUT_S = 240


# Its own cluster (30 s): on demand with -m slow, like the full benchmarks it smokes.
@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 30)
def test_worker_drain_smoke(tmp_path: Path) -> None:
    out = tmp_path / "drain.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--rate", "10", "--duration", "2", "--idle", "0.5",
         "--nodes-per-region", "1", "--drain-timeout", "60", "--json", str(out)],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["config"]["bookings"] == 20
    # A loaded machine may make a write miss its deadline (503): that flow is not
    # counted. Every confirm that was is checked.
    confirmed = result["confirms"]
    assert confirmed >= 1 and result["answers"].get("confirm 200") == confirmed, result
    for kind in ("ticket", "notification", "payment_event"):
        assert result["jobs"][kind] >= confirmed, result["jobs"]
    assert result["drain_after_load_s"] is not None  # the backlog emptied
    assert result["samples"][-1]["backlog"]["total"] == 0
    for key in ("confirms_per_s", "drained_per_s_during_load", "backlog_peak",
                "worker_cpu_ms_per_confirm", "cpu_ms_per_confirm", "redis_calls_per_confirm",
                "handler_wall_ms"):
        assert key in result, key
    assert "confirms accepted" in proc.stdout and "backlog" in proc.stdout


def test_render_timing_mode_needs_no_cluster() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--render", "5"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout)
    assert set(figures) == {"qr_ms", "render_ms", "png_ms", "ticket_ms"}
    assert all(value > 0 for value in figures.values())
