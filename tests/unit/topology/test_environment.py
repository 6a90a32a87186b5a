"""Environment variables and secret files are read in one place (`topology/secrets.py`
and `topology/environment.py`); everything else receives what they read."""

from __future__ import annotations

import ast
from pathlib import Path

from bookcluster.topology.secrets import Secrets

PACKAGE = Path(__file__).resolve().parents[2] / "bookcluster"
READERS = {PACKAGE / "topology" / "secrets.py", PACKAGE / "topology" / "environment.py"}
OS_ENVIRONMENT = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def environment_uses(path: Path) -> list[str]:
    """Where `path` touches the process environment itself: `os.environ`, `os.getenv`
    and the like, or such a name imported from `os`/`posix`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in OS_ENVIRONMENT:
            found.append(f"{path.name}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "posix", "nt"):
            found += [f"{path.name}:{node.lineno}: import {a.name}"
                      for a in node.names if a.name in OS_ENVIRONMENT]
    return found


def test_only_the_topology_readers_read_the_environment() -> None:
    found = [f"{path.parent.relative_to(PACKAGE.parent)}/{use}"
             for path in sorted(PACKAGE.rglob("*.py")) if path not in READERS
             for use in environment_uses(path)]
    assert not found, "read the environment through bookcluster.topology.secrets or " \
        ".environment:\n" + "\n".join(found)


def test_the_check_sees_a_reader(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom os import getenv\nx = os.environ.get('BOOKCLUSTER_X')\n")
    assert sorted(environment_uses(module)) == ["m.py:2: import getenv", "m.py:3: .environ"]


def test_a_variable_comes_before_the_file_topology_names(tmp_path: Path) -> None:
    file = tmp_path / "jwt"
    file.write_text("from-the-file\n")
    given = Secrets(tmp_path, {"BOOKCLUSTER_JWT_SECRET": "from-the-variable"})
    assert given.get_with_file("jwt_secret", file) == "from-the-variable"
    assert Secrets(tmp_path, {}).get_with_file("jwt_secret", file) == "from-the-file"
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "jwt_secret").write_text("x" * 20)
    assert Secrets(tmp_path, {}).get_with_file("jwt_secret", None) == "x" * 20
    assert Secrets(tmp_path, {"BOOKCLUSTER_OPERATOR_TOKEN": "t"}).given("operator_token") == "t"
    assert Secrets(tmp_path, {"BOOKCLUSTER_OPERATOR_TOKEN": ""}).given("operator_token") is None
