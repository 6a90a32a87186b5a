"""The package's floor plan: dependencies point one way (ARCHITECTURE.md, "Layout").

Every import of a `bookcluster` module, module-level or inside a function, must
point to the importer's own layer or one below it. A test, so a shortcut that
couples a low room to a high one fails here and not in a maintainer's head.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "bookcluster"

# Lowest first. A module may import from its own layer and any layer before it.
LAYERS: list[set[str]] = [
    # loops: the supervised periodic-loop helper every background loop runs in (seats,
    # booking, node and worker all own loops); it imports nothing of the package.
    # tracing: OpenTelemetry spans (no-ops when off) for every layer; imports nothing either.
    {"errors", "loops", "tracing"},
    {"topology"},
    {"stores"},
    {"db", "metrics"},
    {"catalog"},
    {"seats"},
    {"booking"},
    {"node"},
    {"worker"},
    {"ops"},
    {"devsim"},
    {"local"},
    {"deploy"},
    {"cli", "__main__"},
]
RANK = {room: rank for rank, rooms in enumerate(LAYERS) for room in rooms}


def room_of(module: str) -> str:
    """`bookcluster.seats.cache` -> "seats"; `bookcluster.cli` -> "cli"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return [(line, name) for line, name in found if name.startswith("bookcluster.")]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts).removesuffix(".__init__")


def test_every_room_has_a_layer() -> None:
    rooms = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").exists()) and p.name != "__init__.py"}
    assert rooms <= set(RANK), f"rooms without a layer: {sorted(rooms - set(RANK))}"


def test_no_module_imports_upward() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        here = room_of(importer)
        if here == "__init__":
            continue
        for line, name in imports_of(path):
            there = room_of(name)
            if there in RANK and RANK[there] > RANK[here]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {here} -> {name}")
    assert not upward, "imports that point upward:\n" + "\n".join(upward)
