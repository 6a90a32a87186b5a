"""The shipped alert rules (deploy/prometheus/alerts.yml): `promtool test rules` passes,
every alert is shown firing there, and every metric they name is one the project exports.

promtool is Debian's `prometheus` package (`scripts/ops-tools-setup` installs it as
root); without it the promtool test skips and says so, the others still run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from bookcluster.booking.admitter import AdmitterMetrics
from bookcluster.loops import Loops
from bookcluster.metrics import NodeMetrics, WorkerMetrics, watch_secret_files

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "loadtests" / "grafana" / "bookcluster-dashboard.json"
# Series of other exporters the rules may name (Patroni's REST API /metrics).
FOREIGN = ("patroni_",)
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def _alerts(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def exported_names() -> set[str]:
    """Every metric family the nodes' and workers' registries hold."""
    names = set()
    for registry in (NodeMetrics("north").registry, WorkerMetrics("north").registry):
        AdmitterMetrics(registry)
        Loops("north", registry)
        watch_secret_files(registry, "north", {})
        names |= {family.name for family in registry.collect()}
        names |= {f"{family.name}_total" for family in registry.collect()
                  if family.type == "counter"}
    return names


def named_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (identifiers followed by `{`, `[`, a
    space or the end, that are neither functions nor keywords)."""
    words = set(re.findall(r"\b([a-z_][a-z0-9_]*)\b(?=\s*[{\[)\s]|$)", expr))
    return {w for w in words if w.startswith("bookcluster_") or w.startswith(FOREIGN)}


def base_name(series: str) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        if series.endswith(suffix):
            return series.removesuffix(suffix)
    return series


def test_promtool_rule_tests_pass() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found: Debian's `prometheus` package has it "
                    "(scripts/ops-tools-setup installs it as root)")
    check = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=RULES,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run([promtool, "test", "rules", "alerts.test.yml"], cwd=RULES,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_is_tested_firing() -> None:
    alerts = {rule["alert"] for rule in _alerts(yaml.safe_load((RULES / "alerts.yml").read_text()))}
    tests = yaml.safe_load((RULES / "alerts.test.yml").read_text())["tests"]
    firing = {case["alertname"] for test in tests for case in test["alert_rule_test"]
              if case["exp_alerts"]}
    assert alerts - firing == set(), "alerts never shown firing in alerts.test.yml"
    assert firing <= alerts


def test_every_metric_named_is_exported() -> None:
    exported = exported_names()
    doc = yaml.safe_load((RULES / "alerts.yml").read_text())
    named = set().union(*(named_metrics(rule["expr"]) for rule in _alerts(doc)))
    ours = {base_name(n) for n in named if not n.startswith(FOREIGN)}
    assert ours, "the rules name no metric of ours"
    assert ours - exported == set(), "metrics the rules name that nothing exports"


def test_the_dashboard_charts_exported_metrics() -> None:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in doc["panels"] for t in panel.get("targets", [])]
    named = set().union(*(named_metrics(e) for e in exprs))
    assert {"bookcluster_store_reachable", "bookcluster_secret_file_present"} <= named
    assert {base_name(n) for n in named if not n.startswith(FOREIGN)} - exported_names() \
        == set()


def test_the_test_series_are_the_exported_names() -> None:
    """The promtool tests feed the series the code exports, not look-alikes."""
    exported = exported_names()
    tests = yaml.safe_load((RULES / "alerts.test.yml").read_text())["tests"]
    series = {re.match(r"[a-z_0-9]+", s["series"]).group(0)  # type: ignore[union-attr]
              for test in tests for s in test["input_series"]}
    assert {base_name(s) for s in series if not s.startswith(FOREIGN)} - exported == set()


def test_a_metric_nothing_exports_is_caught() -> None:
    assert named_metrics('rate(bookcluster_holds_total{outcome="x"}[2m]) > 0') == \
        {"bookcluster_holds_total"}
    assert "bookcluster_no_such_gauge" not in exported_names()
    assert "bookcluster_store_reachable" in exported_names()


def test_a_secret_file_gone_reads_0_at_the_next_scrape(tmp_path: Path) -> None:
    path = tmp_path / "pg_password"
    path.write_text("x" * 32)
    registry = CollectorRegistry()
    watch_secret_files(registry, "north", {"pg_password": path})
    labels = {"region": "north", "name": "pg_password"}
    assert registry.get_sample_value("bookcluster_secret_file_present", labels) == 1.0
    path.unlink()
    assert registry.get_sample_value("bookcluster_secret_file_present", labels) == 0.0
