"""A PNG of a bench run, drawn with Pillow (already a dependency): horizontal bar panels."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .report import (
    CLUSTER_MS_PER_CONFIRM,
    CLUSTER_MS_PER_HOLD,
    NODE_MS_PER_HOLD,
    lower_raw_limit,
    topologies,
)
from .table import WRITES

WIDTH = 1200
LABEL_W = 380
BAR_H = 16
ROW_GAP = 8
COLORS = ["#3b6fb6", "#e07b39", "#5a9e5a", "#b64b4b", "#8a6bb8"]
TARGET = "#c0392b"


@dataclass
class Panel:
    title: str
    series: list[str]  # legend, one color each
    rows: list[tuple[str, list[float | None]]]
    unit: str = ""
    log: bool = False
    targets: list[tuple[str, float]] = field(default_factory=list)  # (label, x)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _height(panel: Panel) -> int:
    per_row = len(panel.series) * BAR_H + ROW_GAP
    return 60 + len(panel.rows) * per_row + 20


def _scale(panel: Panel) -> tuple[float, float]:
    values = [v for _, vs in panel.rows for v in vs if v] + [x for _, x in panel.targets]
    top = max(values) if values else 1.0
    if panel.log:
        low = min(values) if values else 0.1
        return math.log10(max(low / 2, 1e-3)), math.log10(top * 1.3)
    return 0.0, top * 1.15


def _x(panel: Panel, value: float, lo: float, hi: float, left: int, right: int) -> int:
    v = math.log10(max(value, 1e-3)) if panel.log else value
    share = (v - lo) / (hi - lo) if hi > lo else 0.0
    return left + int(max(0.0, min(1.0, share)) * (right - left))


def _draw_panel(draw: ImageDraw.ImageDraw, panel: Panel, top: int) -> None:
    title, small = _font(18), _font(13)
    left, right = LABEL_W, WIDTH - 110
    draw.text((20, top + 8), panel.title, fill="black", font=title)
    for i, name in enumerate(panel.series):
        x = 20 + i * 170
        draw.rectangle([x, top + 36, x + 12, top + 48], fill=COLORS[i % len(COLORS)])
        draw.text((x + 18, top + 34), name, fill="black", font=small)
    lo, hi = _scale(panel)
    y = top + 60
    body_top = y
    for label, values in panel.rows:
        draw.text((20, y + 2), label, fill="black", font=small)
        for i, value in enumerate(values):
            if value is not None:
                x = _x(panel, value, lo, hi, left, right)
                draw.rectangle([left, y, max(left + 1, x), y + BAR_H - 3],
                               fill=COLORS[i % len(COLORS)])
                digits = 2 if value < 10 else 1
                draw.text((x + 6, y), f"{value:,.{digits}f}{panel.unit}", fill="black",
                          font=small)
            y += BAR_H
        y += ROW_GAP
    for label, value in panel.targets:
        x = _x(panel, value, lo, hi, left, right)
        for dash in range(body_top, y, 8):
            draw.line([x, dash, x, min(dash + 4, y)], fill=TARGET, width=2)
        draw.text((x + 4, body_top - 16), label, fill=TARGET, font=small)
    draw.line([left, body_top - 2, left, y], fill="#888888")


def _g(data: Any, *path: Any) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def panels(results: dict[str, Any]) -> list[Panel]:
    reads, d = results.get("reads") or {}, results["derived"]["ratios"]
    tops = topologies(results)
    main = results["writes"][tops[0]] if tops else {}
    out = [Panel("Ours as % of the raw limit / the trivial handler (targets dashed)",
                 ["%"], [(label, [None if v is None else v * 100]) for label, v in (
                     ("direct hold / lower raw limit", d["hold_vs_lower_raw_limit"]),
                     ("direct confirm / pgbench bc_confirm", d["confirm_vs_pg_confirm_limit"]),
                     ("seat map hot / trivial handler", d["hot_reads_vs_trivial"]),
                     ("seat map cold / trivial handler", d["cold_reads_vs_trivial"]))],
                 unit="%", targets=[("50%", 50.0), ("70%", 70.0)])]
    groups = ("cluster", "nodes", "postgres", "workers")
    out.append(Panel("CPU ms per operation (issue 11 targets dashed)", list(groups), [
        (f"{top}/region {label}", [_g(results, "writes", top, key, "cpu_ms_per_op", g)
                                   for g in groups])
        for top in tops for label, key in WRITES], " ms",
        targets=[("node/hold 0.5", NODE_MS_PER_HOLD), ("cluster/hold 1.2", CLUSTER_MS_PER_HOLD),
                 ("cluster/confirm 2.5", CLUSTER_MS_PER_CONFIRM)]))
    rows = [(f"{top}/region {label}", [_g(results, "writes", top, key, "p50_ms"),
                                       _g(results, "writes", top, key, "p99_ms")])
            for top in tops for label, key in (*WRITES, ("one seat (burst)", "one_seat"))]
    rows += [(label, [_g(reads, key, "p50_ms"), _g(reads, key, "p99_ms")])
             for label, key in (("trivial handler", "reads_trivial"),
                                ("seat map hot", "reads_hot"), ("seat map cold", "reads_cold"))]
    out.append(Panel("Latency under load, ms (log scale)", ["p50", "p99"], rows, " ms",
                     log=True, targets=[("10 ms", 10.0), ("250 ms", 250.0)]))
    out.append(Panel("Throughput, per second (log scale)", ["ours", "raw limit"], [
        *((f"{top}/region holds direct vs lower raw limit",
           [_g(results, "writes", top, "holds_direct", "ok_per_s"), _lower(results)])
          for top in tops),
        ("confirms direct vs pgbench bc_confirm",
         [_g(main, "confirms_direct", "ok_per_s"), _g(results, "raw", "pg", "confirm",
                                                      "per_s")]),
        ("seat map hot vs trivial handler", [_g(reads, "reads_hot", "ok_per_s"),
                                             _g(reads, "reads_trivial", "ok_per_s")]),
        ("seat map cold vs trivial handler", [_g(reads, "reads_cold", "ok_per_s"),
                                              _g(reads, "reads_trivial", "ok_per_s")])],
        log=True))
    runs = sorted(results["runs"].items(), key=lambda kv: int(kv[0]))
    delays = [f"WAN {k} ms" for k, _ in runs]
    pairs = sorted({p for _, run in runs for p in (_g(run, "change_delay", "pairs") or {})})
    out.append(Panel("Change -> remote cache, p99 ms (home -> reader)", delays,
                     [(p.replace("->", " -> "), [_g(run, "change_delay", "pairs", p, "from_ts",
                                                    "p99_ms") for _, run in runs])
                      for p in pairs], " ms",
                     targets=[(f"{50 + int(k)} ms", 50.0 + int(k)) for k, _ in runs]))
    ops = (("hold, home-region node", "hold_local"), ("hold, other-region node", "hold_remote"),
           ("confirm, home-region node", "confirm_local"),
           ("confirm, other-region node", "confirm_remote"),
           ("seat map, own region", "read_local"))
    out.append(Panel("Local vs remote, p50 ms", delays,
                     [(label, [_g(run, "local_remote", key, "p50_ms") for _, run in runs])
                      for label, key in ops], " ms"))
    return out


def _lower(results: dict[str, Any]) -> float | None:
    return lower_raw_limit(results)[0]


def draw(results: dict[str, Any], path: Path) -> None:
    chosen = panels(results)
    m = results["machine"]
    header = 70
    height = header + sum(_height(p) for p in chosen)
    image = Image.new("RGB", (WIDTH, height), "white")
    pen = ImageDraw.Draw(image)
    pen.text((20, 12), f"bookcluster bench {results['started_at']}", fill="black",
             font=_font(22))
    pen.text((20, 42), f"{m['cpu_model']}, {m['nproc']} cores, {m['memory_gib']} GiB; "
             f"durable={str(m['durable']).lower()}; client and servers share the machine",
             fill="#444444", font=_font(14))
    top = header
    for panel in chosen:
        pen.line([0, top, WIDTH, top], fill="#dddddd")
        _draw_panel(pen, panel, top)
        top += _height(panel)
    image.save(path)
