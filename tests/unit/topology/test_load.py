"""Loading and validating topology.yaml."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from bookcluster.topology.errors import TopologyError
from bookcluster.topology.load import load_topology, parse_topology
from bookcluster.topology.model import parse_duration
from tests.integration.support import topology_yaml

REPO_TOPOLOGY = Path(__file__).resolve().parents[3] / "topology.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> TopologyError:
    with pytest.raises(TopologyError) as info:
        load_topology(write(tmp_path, text))
    return info.value


def test_embedded_default_describes_three_regions_of_five_nodes() -> None:
    topology = load_topology(REPO_TOPOLOGY)
    assert sorted(topology.regions) == ["north", "south", "west"]
    for region in topology.regions.values():
        assert len(region.nodes) == 5
        assert sorted(region.redis_replicas) == ["north", "south", "west"]
        assert region.pg_standby is not None
        assert all(ep.host == "127.0.0.1" for _, ep in region.endpoints())
    assert len(topology.theatres) >= 60
    assert topology.settings.hold_ttl_s == 600.0
    assert topology.settings.max_seats_per_booking == 10
    # Three sentinels, one per region, each region's own asked first; 1 s to fail over.
    assert [str(ep) for ep in topology.sentinels(first="south")] == [
        "127.0.0.1:6429", "127.0.0.1:6419", "127.0.0.1:6439"]
    assert topology.settings.redis_down_after_s == 1.0


def test_loaded_topology_is_frozen(tmp_path: Path) -> None:
    topology = load_topology(write(tmp_path, topology_yaml(tmp_path / "run")))
    with pytest.raises(AttributeError):
        topology.epoch = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        topology.regions["east"] = topology.regions["north"]  # type: ignore[index]


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    err = error_of(tmp_path, "epoch: 1\nregions:\n  north: [unclosed\n")
    assert "malformed YAML" in str(err)
    assert str(tmp_path / "topology.yaml") in str(err)
    assert err.line is not None and err.line >= 3


def test_unknown_region_in_theatre_map(tmp_path: Path) -> None:
    text = topology_yaml(tmp_path / "run", theatres={"delhi-01": "north", "pune-01": "east"})
    err = error_of(tmp_path, text)
    assert err.key == "theatres.pune-01"
    assert "unknown region 'east'" in err.reason
    assert err.line == text.splitlines().index("  pune-01: east") + 1


def test_duplicate_host_port(tmp_path: Path) -> None:
    text = topology_yaml(tmp_path / "run")
    lines = text.splitlines()
    north_master = next(line for line in lines if "master:" in line).split()[-1]
    south_pg = [i for i, line in enumerate(lines) if "primary:" in line][1]
    lines[south_pg] = f"      primary: {north_master}"
    err = error_of(tmp_path, "\n".join(lines))
    assert err.key == "regions.south.postgres.primary"
    assert f"duplicate host:port {north_master}" in err.reason
    assert "regions.north.redis.master" in err.reason


def test_region_without_master(tmp_path: Path) -> None:
    text = "\n".join(line for line in topology_yaml(tmp_path / "run").splitlines()
                     if "master:" not in line or "west" in line) + "\n"
    err = error_of(tmp_path, text)
    assert err.key == "regions.north.redis.master"
    assert err.reason == "missing"


def test_region_without_nodes(tmp_path: Path) -> None:
    lines = topology_yaml(tmp_path / "run").splitlines()
    first_nodes = next(i for i, line in enumerate(lines) if "nodes:" in line)
    lines[first_nodes] = "    nodes: []"
    err = error_of(tmp_path, "\n".join(lines))
    assert err.key == "regions.north.nodes"
    assert "non-empty" in err.reason


@pytest.mark.parametrize(("replace", "key", "reason"), [
    ("epoch: 1", "epoch", "positive integer"),
    ("  durable: false", "settings.durable", "true or false"),
])
def test_wrong_types(tmp_path: Path, replace: str, key: str, reason: str) -> None:
    bad = {"epoch: 1": "epoch: one", "  durable: false": "  durable: sometimes"}[replace]
    err = error_of(tmp_path, topology_yaml(tmp_path / "run").replace(replace, bad))
    assert err.key == key
    assert reason in err.reason


def test_bad_port_and_duration(tmp_path: Path) -> None:
    text = topology_yaml(tmp_path / "run", extra_settings="  hold_ttl: ten minutes\n")
    err = error_of(tmp_path, text)
    assert err.key == "settings.hold_ttl"
    text = topology_yaml(tmp_path / "run")
    port_line = next(line for line in text.splitlines() if "master:" in line)
    err = error_of(tmp_path, text.replace(port_line, "      master: 127.0.0.1:99999"))
    assert err.key == "regions.north.redis.master" and "1..65535" in err.reason


def test_access_log_is_a_flag_off_by_default(tmp_path: Path) -> None:
    assert not load_topology(write(tmp_path, topology_yaml(tmp_path / "run"))).settings.access_log
    on = topology_yaml(tmp_path / "run", extra_settings="  access_log: true\n")
    assert load_topology(write(tmp_path, on)).settings.access_log
    err = error_of(tmp_path, on.replace("access_log: true", "access_log: json"))
    assert err.key == "settings.access_log" and "true or false" in err.reason


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    text = topology_yaml(tmp_path / "run").replace("regions:", "regoins: {}\nregions:")
    err = error_of(tmp_path, text)
    assert err.key == "regoins" and "unknown key" in err.reason


def test_replica_of_every_region_is_required(tmp_path: Path) -> None:
    lines = topology_yaml(tmp_path / "run").splitlines()
    lines.remove(next(line for line in lines if line.strip().startswith("west: 127")))
    err = error_of(tmp_path, "\n".join(lines))
    assert err.key == "regions.north.redis.replicas" and "west" in err.reason


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read"):
        load_topology(tmp_path / "nope.yaml")


def test_durations() -> None:
    assert parse_duration("5s") == 5.0
    assert parse_duration("250ms") == 0.25
    assert parse_duration("30m") == 1800.0
    with pytest.raises(ValueError):
        parse_duration("5 parsecs")


def test_sentinels_are_optional_and_checked(tmp_path: Path) -> None:
    assert load_topology(write(tmp_path, topology_yaml(
        tmp_path / "run", sentinels=False))).sentinels() == []
    text = topology_yaml(tmp_path / "run", redis_down_after="soon")
    err = error_of(tmp_path, text)
    assert err.key == "settings.redis_down_after" and "duration" in err.reason
    lines = topology_yaml(tmp_path / "run").splitlines()
    master = next(line for line in lines if "master:" in line).split()[-1]
    south = [i for i, line in enumerate(lines) if "sentinel:" in line][1]
    lines[south] = f"      sentinel: {master}"
    err = error_of(tmp_path, "\n".join(lines))
    assert err.key == "regions.south.redis.sentinel" and "duplicate host:port" in err.reason


def test_catalog_start_is_a_date_and_optional(tmp_path: Path) -> None:
    """Regions seeded on separate hosts (and days) seed the same shows when it is set."""
    text = topology_yaml(tmp_path / "run")
    assert load_topology(write(tmp_path, text)).settings.catalog_day_one() == date.today()
    dated = text.replace("settings:\n", "settings:\n  catalog_start: 2026-12-01\n", 1)
    assert load_topology(write(tmp_path, dated)).settings.catalog_day_one() == date(2026, 12, 1)
    err = error_of(tmp_path, text.replace("settings:\n", "settings:\n  catalog_start: soon\n", 1))
    assert err.key == "settings.catalog_start" and "YYYY-MM-DD" in err.reason


def test_the_onsale_admission_ceiling_is_a_positive_rate(tmp_path: Path) -> None:
    text = topology_yaml(tmp_path / "run")
    assert load_topology(write(tmp_path, text)).settings.onsale_admit_ceiling == 50.0
    set_to = text.replace("settings:\n", "settings:\n  onsale_admit_ceiling: 12.5\n", 1)
    assert load_topology(write(tmp_path, set_to)).settings.onsale_admit_ceiling == 12.5
    for bad in ("0", "-3", "fast", "true"):
        err = error_of(tmp_path, text.replace(
            "settings:\n", f"settings:\n  onsale_admit_ceiling: {bad}\n", 1))
        assert err.key == "settings.onsale_admit_ceiling" and "positive" in err.reason


def test_the_smtp_relay_is_an_optional_address(tmp_path: Path) -> None:
    text = topology_yaml(tmp_path / "run")
    assert load_topology(write(tmp_path, text)).settings.smtp_relay is None
    set_to = text.replace("settings:\n", "settings:\n  smtp_relay: 127.0.0.1:2525\n", 1)
    assert str(load_topology(write(tmp_path, set_to)).settings.smtp_relay) == "127.0.0.1:2525"
    err = error_of(tmp_path, text.replace("settings:\n", "settings:\n  smtp_relay: mail\n", 1))
    assert err.key == "settings.smtp_relay" and "host:port" in err.reason


@pytest.mark.parametrize(("auth", "reason"), [
    ("  dev_sign_in: yes please\n", "expected true or false"),
    ("  dev_sign_in: true\n", "not a topology setting"),
])
def test_dev_sign_in_is_validated(tmp_path: Path, auth: str, reason: str) -> None:
    text = ("regions:\n  north:\n    redis: {master: 127.0.0.1:1, replicas: {north: "
            "127.0.0.1:2}}\n    postgres: {primary: 127.0.0.1:3}\n    nodes: [127.0.0.1:4]\n"
            f"auth:\n{auth}")
    with pytest.raises(TopologyError, match=reason) as caught:
        parse_topology(text, tmp_path / "topology.yaml", run_dir=tmp_path)
    assert "auth.dev_sign_in" in str(caught.value)


def test_an_error_reads_file_line_key_reason(tmp_path: Path) -> None:
    """What an operator sees: `<file>:<line>: <key>: <reason>`, the line the key's own."""
    text = topology_yaml(tmp_path / "run", theatres={"delhi-01": "north", "pune-01": "east"})
    err = error_of(tmp_path, text)
    line = text.splitlines().index("  pune-01: east") + 1
    assert str(err) == (f"{tmp_path / 'topology.yaml'}:{line}: theatres.pune-01: "
                        "unknown region 'east' (known: north, south, west)")


def test_a_missing_key_is_placed_at_its_parents_line(tmp_path: Path) -> None:
    """A key that is absent has no line of its own: the error names its nearest parent's."""
    text = "\n".join(line for line in topology_yaml(tmp_path / "run").splitlines()
                     if "master:" not in line or "west" in line) + "\n"
    err = error_of(tmp_path, text)
    redis_line = text.splitlines().index("    redis:") + 1
    assert err.key == "regions.north.redis.master" and err.line == redis_line
    assert str(err).startswith(f"{tmp_path / 'topology.yaml'}:{redis_line}: "
                               "regions.north.redis.master: missing")


def test_a_duplicate_key_is_refused_at_its_second_line(tmp_path: Path) -> None:
    text = topology_yaml(tmp_path / "run").replace("epoch: 1\n", "epoch: 1\nepoch: 2\n", 1)
    err = error_of(tmp_path, text)
    assert err.key == "epoch" and err.reason == "duplicate key"
    assert err.line == text.splitlines().index("epoch: 2") + 1


def test_an_unreadable_file_names_the_file_and_no_line(tmp_path: Path) -> None:
    err = error_of(tmp_path, "")  # an empty file
    assert err.line is None and err.reason == "file is empty"
    assert str(err) == f"{tmp_path / 'topology.yaml'}: <root>: file is empty"


def test_refunds_close_at_the_start_unless_set_and_may_close_after_it(tmp_path: Path) -> None:
    text = topology_yaml(tmp_path / "run")
    assert load_topology(write(tmp_path, text)).settings.refund_closes_before_s == 0.0
    for value, seconds in (("30m", 1800.0), ("-48h", -172800.0), ("0s", 0.0)):
        set_to = text.replace("settings:\n", f"settings:\n  refund_closes_before: {value}\n", 1)
        assert load_topology(write(tmp_path, set_to)).settings.refund_closes_before_s == seconds
    for bad in ("soon", "'-'", "--3s", "10"):
        err = error_of(tmp_path, text.replace(
            "settings:\n", f"settings:\n  refund_closes_before: {bad}\n", 1))
        assert err.key == "settings.refund_closes_before" and "duration" in err.reason
