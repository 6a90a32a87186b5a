"""A PNG of a bench run, drawn with matplotlib: one panel of horizontal bars per figure."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

import matplotlib.pyplot as plt  # noqa: E402 (after the backend is chosen)
from matplotlib.axes import Axes  # noqa: E402

from .report import (  # noqa: E402
    CLUSTER_MS_PER_BOOKING,
    CLUSTER_MS_PER_CONFIRM,
    CLUSTER_MS_PER_HOLD,
    NODE_MS_PER_HOLD,
    get,
    lower_raw_limit,
    topologies,
)
from .table import WRITES  # noqa: E402

BAR_IN = 0.22  # inches per bar
TARGET = "#c0392b"


@dataclass
class Panel:
    title: str
    series: list[str]  # legend, one color each
    rows: list[tuple[str, list[float | None]]]
    unit: str = ""
    log: bool = False
    targets: list[tuple[str, float]] = field(default_factory=list)  # (label, x)


def _height(panel: Panel) -> float:
    return 0.9 + BAR_IN * len(panel.rows) * (len(panel.series) + 0.4)


def _draw_panel(ax: Axes, panel: Panel) -> None:
    width = 0.8 / len(panel.series)
    for i, name in enumerate(panel.series):
        values = [row[i] for _, row in panel.rows]
        where = [r + (i - (len(panel.series) - 1) / 2) * width for r in range(len(panel.rows))]
        bars = ax.barh(where, [float("nan") if v is None else v for v in values], width,
                       label=name, log=panel.log)
        ax.bar_label(bars, padding=3, fontsize=8, labels=[
            "" if v is None else f"{v:,.{2 if v < 10 else 1}f}{panel.unit}" for v in values])
    for label, x in panel.targets:
        ax.axvline(x, color=TARGET, linestyle="--", linewidth=1.2)
        ax.annotate(label, (x, 1), xycoords=("data", "axes fraction"), color=TARGET,
                    fontsize=8, xytext=(3, 2), textcoords="offset points")
    ax.set_yticks(range(len(panel.rows)), [label for label, _ in panel.rows], fontsize=9)
    ax.invert_yaxis()
    ax.margins(x=0.15)
    ax.set_title(panel.title, loc="left", fontsize=11, pad=14)
    ax.legend(loc="best", fontsize=8)


def peer_panels(results: dict[str, Any]) -> list[Panel]:
    peer = results.get("peer")
    if not peer:
        return []
    theirs = peer["peer"]
    return [
        Panel(f"Peer shape ({peer['clients']} clients, {peer['seats']}-seat holds, 1,000-seat "
              "shows): ours vs the peer's published figures, per second (log scale)",
              ["ours", "peer"], [
                  ("holds/s", [get(peer, "holds", "ok_per_s"), theirs["holds_per_s"]]),
                  ("hold->pay->confirm flows/s", [get(peer, "flows", "ok_per_s"),
                                                  theirs["flows_per_s"]]),
                  ("seat map req/s", [get(peer, "seat_map", "ok_per_s"),
                                      theirs["seat_map_per_s"]])], log=True),
        Panel("Peer shape: CPU ms per operation (targets dashed: cluster per hold 1.2, "
              "per booking 4, whole machine per hold 0.4x the peer's)",
              ["ours", "peer"], [
                  ("whole machine per hold", [get(peer, "holds", "machine_cpu_ms_per_op"),
                                              theirs["machine_cpu_ms_per_hold"]]),
                  ("cluster per hold", [get(peer, "holds", "cpu_ms_per_op", "cluster"), None]),
                  ("nodes per hold", [get(peer, "holds", "cpu_ms_per_op", "nodes"), None]),
                  ("cluster per booking (jobs included)",
                   [get(peer, "flows", "cluster_ms_per_booking"), None])], " ms",
              targets=[("1.2", CLUSTER_MS_PER_HOLD),
                       (f"{0.4 * theirs['machine_cpu_ms_per_hold']:.2f}",
                        0.4 * theirs["machine_cpu_ms_per_hold"]),
                       ("4", CLUSTER_MS_PER_BOOKING)])]


def draw_backlog(ax: Axes, results: dict[str, Any]) -> None:
    drain = get(results, "peer", "flows", "drain") or {}
    samples = drain.get("samples") or []
    t = [x["t_s"] for x in samples]
    ax.plot(t, [x["jobs_waiting"] for x in samples], label="jobs waiting")
    ax.plot(t, [x["total"] for x in samples], label="backlog (jobs + mirror rows)")
    window = get(results, "peer", "flows", "elapsed_s")
    if window:
        ax.axvline(window, color=TARGET, linestyle="--", linewidth=1.2)
        ax.annotate("load ends", (window, 1), xycoords=("data", "axes fraction"),
                    color=TARGET, fontsize=8, xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel("s since the flows' load started", fontsize=9)
    ax.set_title(f"Peer-shape flows: backlog over time; confirms answered "
                 f"{drain.get('answered_per_s')}/s, workers drained {drain.get('drained_per_s')}"
                 "/s", loc="left", fontsize=11, pad=14)
    ax.legend(loc="best", fontsize=8)


def panels(results: dict[str, Any]) -> list[Panel]:
    reads, d = results.get("reads") or {}, results["derived"]["ratios"]
    tops = topologies(results)
    main = results["writes"][tops[0]] if tops else {}
    out = peer_panels(results)
    out += [Panel("Ours as % of the raw limit / the trivial handler (targets dashed)",
                 ["%"], [(label, [None if v is None else v * 100]) for label, v in (
                     ("direct hold / lower raw limit", d["hold_vs_lower_raw_limit"]),
                     ("direct confirm / pgbench bc_confirm", d["confirm_vs_pg_confirm_limit"]),
                     ("seat map hot / trivial handler", d["hot_reads_vs_trivial"]),
                     ("seat map cold / trivial handler", d["cold_reads_vs_trivial"]))],
                 unit="%", targets=[("50%", 50.0), ("70%", 70.0)])]
    groups = ("cluster", "nodes", "postgres", "workers")
    out.append(Panel("CPU ms per operation (targets dashed: node per hold 0.3, cluster per hold "
                     "1.2, per confirm 2.5)", list(groups), [
        (f"{top}/region {label}", [get(results, "writes", top, key, "cpu_ms_per_op", g)
                                   for g in groups])
        for top in tops for label, key in WRITES], " ms",
        targets=[(f"{v:g}", v) for v in (NODE_MS_PER_HOLD, CLUSTER_MS_PER_HOLD,
                                         CLUSTER_MS_PER_CONFIRM)]))
    rows = [(f"{top}/region {label}", [get(results, "writes", top, key, "p50_ms"),
                                       get(results, "writes", top, key, "p99_ms")])
            for top in tops for label, key in (*WRITES, ("one seat (burst)", "one_seat"))]
    rows += [(label, [get(reads, key, "p50_ms"), get(reads, key, "p99_ms")])
             for label, key in (("trivial handler", "reads_trivial"),
                                ("seat map hot", "reads_hot"), ("seat map cold", "reads_cold"))]
    out.append(Panel("Latency under load, ms (log scale)", ["p50", "p99"], rows, " ms",
                     log=True, targets=[("10 ms", 10.0), ("250 ms", 250.0)]))
    out.append(Panel("Throughput, per second (log scale)", ["ours", "raw limit"], [
        *((f"{top}/region holds direct vs lower raw limit",
           [get(results, "writes", top, "holds_direct", "ok_per_s"), _lower(results)])
          for top in tops),
        ("confirms direct vs pgbench bc_confirm",
         [get(main, "confirms_direct", "ok_per_s"), get(results, "raw", "pg", "confirm",
                                                      "per_s")]),
        ("seat map hot vs trivial handler", [get(reads, "reads_hot", "ok_per_s"),
                                             get(reads, "reads_trivial", "ok_per_s")]),
        ("seat map cold vs trivial handler", [get(reads, "reads_cold", "ok_per_s"),
                                              get(reads, "reads_trivial", "ok_per_s")])],
        log=True))
    runs = sorted(results["runs"].items(), key=lambda kv: int(kv[0]))
    delays = [f"WAN {k} ms" for k, _ in runs]
    pairs = sorted({p for _, run in runs for p in (get(run, "change_delay", "pairs") or {})})
    out.append(Panel("Change -> remote cache, p99 ms (home -> reader)", delays,
                     [(p.replace("->", " -> "), [get(run, "change_delay", "pairs", p, "from_ts",
                                                    "p99_ms") for _, run in runs])
                      for p in pairs], " ms",
                     targets=[(f"{50 + int(k)} ms", 50.0 + int(k)) for k, _ in runs]))
    ops = (("hold, home-region node", "hold_local"), ("hold, other-region node", "hold_remote"),
           ("confirm, home-region node", "confirm_local"),
           ("confirm, other-region node", "confirm_remote"),
           ("seat map, own region", "read_local"))
    out.append(Panel("Local vs remote, p50 ms", delays,
                     [(label, [get(run, "local_remote", key, "p50_ms") for _, run in runs])
                      for label, key in ops], " ms"))
    return out


def _lower(results: dict[str, Any]) -> float | None:
    return lower_raw_limit(results)[0]


def draw(results: dict[str, Any], path: Path) -> None:
    chosen = [p for p in panels(results) if p.series and p.rows]  # phases that ran
    m = results["machine"]
    heights = [_height(p) for p in chosen]
    backlog = bool(get(results, "peer", "flows", "drain", "samples"))
    if backlog:
        heights.append(3.0)
    fig, axes = plt.subplots(len(heights), 1, figsize=(12, sum(heights) + 0.8),
                             gridspec_kw={"height_ratios": heights}, squeeze=False,
                             layout="constrained")
    fig.suptitle(f"bookcluster bench {results['started_at']}\n{m['cpu_model']}, {m['nproc']} "
                 f"cores, {m['memory_gib']} GiB; durable={str(m['durable']).lower()}; client "
                 "and servers share the machine", x=0.01, ha="left", fontsize=12)
    for ax, panel in zip(axes[:len(chosen), 0], chosen, strict=True):
        _draw_panel(ax, panel)
    if backlog:
        draw_backlog(axes[-1, 0], results)
    fig.savefig(path, dpi=100)
    plt.close(fig)
