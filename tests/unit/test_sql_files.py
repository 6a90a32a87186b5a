"""The SQL files' split: migrations hold no function, function files re-apply cleanly."""

from __future__ import annotations

import re

from bookcluster.db.migrate import function_files, migration_files

CREATE = re.compile(r"^\s*CREATE\s+(OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE)\s+(\w+)\s*\(([^)]*)\)",
                    re.IGNORECASE | re.MULTILINE)


def test_migrations_define_no_function() -> None:
    for _, _, path in migration_files():
        found = CREATE.findall(path.read_text())
        assert not found, f"{path.name} defines {[f[2] for f in found]}: put it in functions/"


def test_function_files_replace_and_define_each_signature_once() -> None:
    seen: dict[tuple[str, str], str] = {}
    for path in function_files():
        found = CREATE.findall(path.read_text())
        assert found, f"{path.name} defines no function"
        for replace, _, name, params in found:
            assert replace, f"{path.name}: CREATE {name} without OR REPLACE cannot re-apply"
            types = ",".join(p.split()[-1] for p in params.split(",") if p.strip())
            key = (name.lower(), types)
            assert key not in seen, f"{name}({types}) in {seen.get(key)} and {path.name}"
            seen[key] = path.name
