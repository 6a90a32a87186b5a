"""`bookcluster`'s commands and flags stay as they are (scripts and tests call them), and
each command imports only what it uses: `--help` answers without the cluster's code."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from bookcluster import cli

FLAGS = {
    "": ["--run-dir", "--topology"],
    "audit": ["--grace", "--json"],
    "deploy": [],
    "deploy helm-values": ["--image", "--region", "--tag"],
    "down": ["--region", "--wipe"],
    "failover": ["--json", "--region", "--store", "--to"],
    "jobs": ["--json", "--limit", "--region", "action", "job_ids"],
    "probe": ["name"],
    "repair": ["--dry-run", "--json", "--region", "--show"],
    "run": ["name"],
    "setup": ["--catalog", "--region"],
    "status": ["--json", "--region", "--wide"],
    "token": ["--json", "--role", "--theatre", "--ttl", "--user"],
    "topology": [],
    "topology apply": ["--dry-run", "--json", "file"],
    "topology diff": ["--json", "file"],
    "topology pull": ["--json", "file"],
    "topology move": ["--dry-run", "--json", "--pause-after", "--rollback", "--timeout",
                      "--to", "theatre"],
    "up": ["--catalog", "--hold-ttl", "--region", "--stored-topology", "--sweep-interval",
           "--wan-delay"],
}


def flags(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, list[str]]:
    out = {prefix: sorted(o for a in parser._actions
                          if not isinstance(a, argparse._SubParsersAction)
                          for o in (a.option_strings or [a.dest]) if o not in ("-h", "--help"))}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.update(flags(sub, f"{prefix} {name}".strip()))
    return out


def test_every_command_and_flag_is_still_there() -> None:
    assert flags(cli.parser()) == FLAGS


def test_flags_parse_as_before() -> None:
    args = cli.parser().parse_args(["--run-dir", "/tmp/x", "up", "--region", "north",
                                    "--region", "west", "--hold-ttl", "5s", "--wan-delay",
                                    "40ms", "--catalog", "small"])
    assert (args.command, args.regions, args.hold_ttl, args.wan_delay, args.catalog) == (
        "up", ["north", "west"], 5.0, 0.04, "small")
    assert args.run_dir == Path("/tmp/x") and args.sweep_interval is None
    args = cli.parser().parse_args(["audit"])
    assert args.grace == 5.0 and args.json is False
    args = cli.parser().parse_args(["token", "--user", "alice", "--user", "bob", "--ttl", "15m",
                                    "--role", "operator"])
    assert (args.users, args.ttl, args.roles) == (["alice", "bob"], 900.0, ["operator"])
    args = cli.parser().parse_args(["topology", "move", "7", "--to", "west"])
    assert (args.action, args.theatre, args.target, args.timeout) == ("move", "7", "west", 10.0)
    assert cli.parser().parse_args(["setup", "--region", "north"]).catalog == "full"


@pytest.mark.parametrize("argv", [["up", "--hold-ttl", "soon"], ["up", "--catalog", "huge"],
                                  ["failover", "--region", "north", "--store", "etcd"], []])
def test_a_bad_flag_is_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.parser().parse_args(argv)
    assert exit_.value.code == 2


def test_the_catalog_sizes() -> None:
    assert cli.catalog_spec("small").theatres_per_city == 1
    assert cli.catalog_spec("full") == type(cli.catalog_spec("full"))()


def loaded_after(*argv: str) -> set[str]:
    """The top-level modules a fresh interpreter holds after `bookcluster ARGV`."""
    code = ("import sys\nfrom bookcluster import cli\ntry:\n    cli.main(sys.argv[1:])\n"
            "except SystemExit:\n    pass\n"
            "print(' '.join(sorted(m for m in sys.modules if '.' not in m or "
            "m.startswith('bookcluster.'))), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                            check=True)
    return set(result.stderr.split("\n")[-2].split())


HEAVY = {"aiohttp", "asyncpg", "redis", "bullmq", "jwt", "PIL", "prometheus_client",
         "uvloop", "psycopg", "patroni"}


def test_help_imports_none_of_the_cluster() -> None:
    loaded = loaded_after("--help")
    assert not loaded & (HEAVY | {"asyncio", "yaml"})
    assert not {m for m in loaded if m.startswith("bookcluster.")} - {
        "bookcluster.cli", "bookcluster.topology", "bookcluster.topology.errors"}


def test_status_imports_what_it_uses(tmp_path: Path) -> None:
    """Nothing running: the launcher's state and the topology, no client library."""
    loaded = loaded_after("--run-dir", str(tmp_path), "status")
    assert not loaded & HEAVY
    assert not {m for m in loaded if m.startswith(("bookcluster.node", "bookcluster.local.launcher",
                                                   "bookcluster.deploy", "bookcluster.seats",
                                                   "bookcluster.booking"))}
