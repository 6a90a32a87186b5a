"""The operator's next `topology.yaml`, and what two versions differ in.

Editing the file's text for a new epoch and reading a stored epoch are
`bookcluster/topology/document.py` (a move done by a region's worker needs them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bookcluster.topology.load import load_topology
from bookcluster.topology.model import Topology
from bookcluster.topology.placement import Placement


def load_next(path: Path, current: Topology) -> Topology:
    """The operator's new file, with the running cluster's run folder."""
    return load_topology(path, run_dir=current.settings.run_dir)


@dataclass(frozen=True)
class TheatreChange:
    theatre: str
    before: str
    after: str
    how: str  # "map" (an explicit entry) or "ring" (the hash ring placed it)


@dataclass
class TopologyDiff:
    epoch: tuple[int, int]
    regions_added: list[str] = field(default_factory=list)
    regions_removed: list[str] = field(default_factory=list)
    nodes: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # region -> +/-
    theatres: list[TheatreChange] = field(default_factory=list)
    # "key: before -> after" of what only a restart takes (settings, stores of a region)
    restart: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.regions_added or self.regions_removed or self.nodes
                    or self.theatres or self.restart)

    def as_dict(self) -> dict[str, Any]:
        return {"epoch": {"from": self.epoch[0], "to": self.epoch[1]},
                "regions": {"added": self.regions_added, "removed": self.regions_removed},
                "nodes": self.nodes,
                "theatres": [dataclasses.asdict(t) for t in self.theatres],
                "restart_needed": self.restart}

    def lines(self) -> list[str]:
        out = [f"epoch {self.epoch[0]} -> {self.epoch[1]}"]
        out += [f"+ region {r}" for r in self.regions_added]
        out += [f"- region {r}" for r in self.regions_removed]
        for region, change in self.nodes.items():
            out += [f"+ {region} {what} {ep}" for what in ("node", "worker")
                    for ep in change.get(f"{what}s_added", [])]
            out += [f"- {region} {what} {ep}" for what in ("node", "worker")
                    for ep in change.get(f"{what}s_removed", [])]
        out += [f"~ theatre {t.theatre}: {t.before} -> {t.after} ({t.how}): needs "
                f"`bookcluster topology move {t.theatre} --to {t.after}`" for t in self.theatres]
        out += [f"! {r} (needs a restart)" for r in self.restart]
        if self.empty:
            return ["no change" if self.epoch[0] == self.epoch[1]
                    else f"no change but the epoch ({self.epoch[0]} -> {self.epoch[1]})"]
        return out


def diff(old: Topology, new: Topology, theatres: Iterable[str]) -> TopologyDiff:
    """What `new` changes against `old`, for these catalog theatres."""
    out = TopologyDiff((old.epoch, new.epoch))
    out.regions_added = sorted(set(new.regions) - set(old.regions))
    out.regions_removed = sorted(set(old.regions) - set(new.regions))
    for name in sorted(set(old.regions) & set(new.regions)):
        before, after = old.region(name), new.region(name)
        change = {}
        for what, was, now in (
                ("node", set(map(str, before.nodes)), set(map(str, after.nodes))),
                ("worker", {str(before.worker)} - {"None"}, {str(after.worker)} - {"None"})):
            if now - was:
                change[f"{what}s_added"] = sorted(now - was)
            if was - now:
                change[f"{what}s_removed"] = sorted(was - now)
        if change:
            out.nodes[name] = change
        stores = {label: str(ep) for label, ep in before.endpoints()
                  if not label.startswith("nodes") and label != "worker"}
        for label, ep in after.endpoints():
            if label in stores and stores[label] != str(ep):
                out.restart.append(f"regions.{name}.{label}: {stores[label]} -> {ep}")
    for section in ("settings", "auth", "limits", "payments"):
        was, now = getattr(old, section), getattr(new, section)
        if was == now:
            continue
        if was is None or now is None:
            out.restart.append(f"{section}: {'added' if was is None else 'removed'}")
            continue
        for key in (f.name for f in dataclasses.fields(was)):
            if getattr(was, key) != getattr(now, key):
                out.restart.append(f"{section}.{key}: {getattr(was, key)} -> {getattr(now, key)}")
    before_at, after_at = Placement(old), Placement(new)
    for theatre in sorted(theatres):
        a, b = before_at.region_of(theatre), after_at.region_of(theatre)
        if a != b:
            how = "map" if after_at.is_explicit(theatre) else "ring"
            out.theatres.append(TheatreChange(theatre, a, b, how))
    return out
