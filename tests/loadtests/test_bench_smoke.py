"""`loadtests/bench.py --smoke`: the whole benchmark, tiny, against its own cluster.

It runs as a subprocess (it starts and stops its own cluster, load generator
processes and scratch servers) and must exit 0 and write a JSON with every
figure. The raw limits are skipped with a note when `redis-benchmark` or
`pgbench` is missing; the rest must be there. Every write carries a token and
confirms use captured payments, so no phase sees anything but 200/201 (no 401,
402, 409 `hold_limit_reached` or 429 `rate_limited`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "loadtests" / "bench.py"
TIMEOUT_S = 240


@pytest.mark.timeout(TIMEOUT_S + 30)
def test_bench_smoke(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--wan-delays", "0", "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "targets:" in proc.stdout
    assert "TokenVerifier.identity():" in proc.stdout
    (json_path,) = tmp_path.glob("bench-*.json")
    assert json_path.with_suffix(".png").stat().st_size > 10_000
    results = json.loads(json_path.read_text())

    machine = results["machine"]
    assert machine["nproc"] >= 1 and machine["memory_gib"] > 0
    assert {"cpu_model", "python", "redis", "postgres", "durable"} <= set(machine)
    assert results["config"]["durable"] is True

    full = results["full"]
    for phase in ("holds", "confirms", "reads_trivial", "reads_hot", "reads_cold"):
        assert full[phase]["ok"] > 0, phase
        assert full[phase]["ok_per_s"] > 0, phase
        assert 0 < full[phase]["p50_ms"] <= full[phase]["p99_ms"], phase
        assert set(full[phase]["statuses"]) <= {"200", "201"}, (phase, full[phase]["errors"])
    assert full["confirms"]["ok"] <= full["holds"]["ok"]
    assert full["reads_cold"]["miss_share"] > 0.9  # cold reads really missed the cache

    rush = full["one_seat"]
    assert rush["created_201"] == 1
    assert rush["clean_409"] == rush["clients"] - 1
    assert rush["other"] == {}

    run = results["runs"]["0"]
    pairs = run["change_delay"]["pairs"]
    assert len(pairs) == 9  # every home region x every reader region
    for pair in pairs.values():
        assert pair["expected"] > 0 and pair["received"] == pair["expected"], pair
        assert 0 <= pair["from_ts"]["p50_ms"] < 1000, pair
    for key in ("hold_local", "hold_remote", "confirm_local", "confirm_remote", "read_local"):
        assert run["local_remote"][key]["ok"] > 0, key
        assert set(run["local_remote"][key]["statuses"]) <= {"200", "201"}, key

    token = results["token_verify"]
    assert token["algorithm"] == "HS256" and token["calls"] > 0
    assert 0 < token["identity_us_best"] <= token["identity_us"] < 10_000
    assert 0 < token["bad_signature_us"] < 10_000 and 0 < token["mint_us"] < 10_000

    raw = results["raw"]
    if "skipped" not in raw["redis_hold"]:
        assert raw["redis_hold"]["per_s"] > 0
    if "skipped" not in raw["pg"]:
        assert raw["pg"]["hold_write"]["per_s"] > 0 and raw["pg"]["confirm"]["per_s"] > 0
    assert raw["stages"]["redis_script"]["count"] > 0
    assert raw["stages"]["pg_write"]["count"] > 0

    derived = results["derived"]
    assert derived["bottleneck"]["verdict"].startswith("hold: ")
    assert {t["target"].split(" ")[0] for t in derived["targets"]} >= {"hold", "seat-map"}
    assert 0 < derived["ratios"]["hot_reads_vs_trivial"]
    assert 0 < derived["token_verify"]["share_of_node_cpu_per_hold"] < 1
