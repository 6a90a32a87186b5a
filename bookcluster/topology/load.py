"""Loading `topology.yaml`: YAML to the frozen model (`topology.model`), validated.

Validation fails on the first problem, naming the file, the line, the key path
and the reason (`TopologyError`: file:line: key: reason), so an operator can fix
the file without reading code.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from bookcluster.topology.errors import TopologyError
from bookcluster.topology.model import (
    Auth,
    Endpoint,
    Limits,
    Payments,
    Rate,
    Region,
    Settings,
    Topology,
    parse_duration,
)

REGION_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
THEATRE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


class _Reader:
    """Walks the YAML node tree, remembering each key path's line for error messages."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[str, int] = {}
        self._scalars = yaml.SafeLoader("")  # resolves scalar tags (int, bool, str)

    def fail(self, key: str, reason: str) -> TopologyError:
        line = self.lines.get(key)
        if line is None:  # fall back to the nearest parent we know a line for
            parent = key
            while parent and line is None:
                parent = parent.rpartition(".")[0]
                line = self.lines.get(parent)
        return TopologyError(self.file, key, reason, line)

    def to_python(self, node: yaml.Node, key: str = "") -> Any:
        self.lines.setdefault(key, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for k_node, v_node in node.value:
                name = str(k_node.value)
                child = f"{key}.{name}" if key else name
                self.lines[child] = k_node.start_mark.line + 1
                if name in out:
                    raise self.fail(child, "duplicate key")
                out[name] = self.to_python(v_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.to_python(v, f"{key}[{i}]") for i, v in enumerate(node.value)]
        return self._scalars.construct_object(node, deep=True)

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {type(value).__name__}")
        return value

    def known_keys(self, value: dict[str, Any], key: str, allowed: set[str]) -> None:
        for name in value:
            if name not in allowed:
                path = f"{key}.{name}" if key else name
                raise self.fail(path, f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def require(self, value: dict[str, Any], key: str, name: str) -> Any:
        if name not in value or value[name] is None:
            raise self.fail(f"{key}.{name}" if key else name, "missing")
        return value[name]

    def endpoint(self, value: Any, key: str) -> Endpoint:
        if not isinstance(value, str) or value.count(":") != 1:
            raise self.fail(key, f"expected 'host:port', got {value!r}")
        host, _, port_text = value.partition(":")
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise self.fail(key, f"expected 'host:port' with a port in 1..65535, got {value!r}")
        return Endpoint(host, int(port_text))

    def duration(self, value: Any, key: str) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None
        if seconds <= 0:
            raise self.fail(key, "must be positive")
        return seconds

    def signed_duration(self, value: Any, key: str) -> float:
        """A duration that may be 0 or negative ('-48h')."""
        text = str(value).strip()
        sign = -1.0 if text.startswith("-") else 1.0
        try:
            return sign * parse_duration(text.removeprefix("-"))
        except ValueError as exc:
            raise self.fail(key, f"{exc} (or a negative one, -48h)") from None


def load_topology(path: str | Path, run_dir: Path | None = None) -> Topology:
    """Read and validate a topology file. Raises TopologyError naming file, line, key, reason."""
    path = Path(path).resolve()
    try:
        text = path.read_text()
    except OSError as exc:
        raise TopologyError(str(path), "", f"cannot read: {exc.strerror}") from None
    return parse_topology(text, path, run_dir)


def parse_topology(text: str, path: Path, run_dir: Path | None = None) -> Topology:
    reader = _Reader(str(path))
    try:
        root_node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise TopologyError(str(path), "", f"malformed YAML: {problem}", line) from None
    if root_node is None:
        raise TopologyError(str(path), "", "file is empty")
    root = reader.mapping(reader.to_python(root_node), "")
    reader.known_keys(root, "", {"epoch", "settings", "regions", "theatres", "payments", "auth",
                                 "limits"})

    epoch = root.get("epoch", 1)
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        raise reader.fail("epoch", f"expected a positive integer, got {epoch!r}")

    settings = _settings(reader, root.get("settings") or {}, path, run_dir)
    regions_raw = reader.mapping(reader.require(root, "", "regions"), "regions")
    if not regions_raw:
        raise reader.fail("regions", "at least one region is required")
    for name in regions_raw:
        if not REGION_NAME.match(name):
            raise reader.fail(f"regions.{name}", "region names are lowercase [a-z0-9_-]")
    regions = {name: _region(reader, name, raw, set(regions_raw))
               for name, raw in regions_raw.items()}

    theatres_raw = reader.mapping(root.get("theatres") or {}, "theatres")
    for theatre_id, region in theatres_raw.items():
        key = f"theatres.{theatre_id}"
        if not THEATRE_ID.match(theatre_id):
            raise reader.fail(key, "theatre ids are lowercase [a-z0-9-]")
        if region not in regions:
            raise reader.fail(key, f"unknown region {region!r} (known: {', '.join(regions)})")

    payments = _payments(reader, root["payments"]) if root.get("payments") else None
    _check_unique_endpoints(reader, regions,
                            [("payments.gateway", payments.gateway)] if payments else [])
    return Topology(
        path=path,
        epoch=epoch,
        settings=settings,
        regions=MappingProxyType(regions),
        theatres=MappingProxyType(dict(theatres_raw)),
        payments=payments,
        auth=_auth(reader, root.get("auth") or {}, path),
        limits=_limits(reader, root.get("limits") or {}),
    )


def _payments(reader: _Reader, raw: Any) -> Payments:
    raw = reader.mapping(raw, "payments")
    if "secret" in raw:
        raise reader.fail("payments.secret", "secrets do not belong in topology.yaml: set "
                          "BOOKCLUSTER_WEBHOOK_SECRET(_FILE), or let `bookcluster up` "
                          "generate one in the run folder")
    reader.known_keys(raw, "payments", {"gateway", "replay_window", "capture_delay",
                                        "fail_share"})
    gateway = reader.endpoint(reader.require(raw, "payments", "gateway"), "payments.gateway")
    out = Payments(gateway)
    if "replay_window" in raw:
        out = replace(out, replay_window_s=reader.duration(raw["replay_window"],
                                                           "payments.replay_window"))
    if "capture_delay" in raw:
        out = replace(out, capture_delay_s=reader.duration(raw["capture_delay"],
                                                           "payments.capture_delay"))
    if "fail_share" in raw:
        share = raw["fail_share"]
        if not isinstance(share, int | float) or isinstance(share, bool) or not 0 <= share <= 1:
            raise reader.fail("payments.fail_share", "expected a number from 0 to 1")
        out = replace(out, fail_share=float(share))
    return out


def _auth(reader: _Reader, raw: Any, path: Path) -> Auth:
    raw = reader.mapping(raw, "auth")
    if "secret" in raw:
        raise reader.fail("auth.secret", "secrets do not belong in topology.yaml: use "
                          "auth.secret_file or BOOKCLUSTER_JWT_SECRET(_FILE)")
    reader.known_keys(raw, "auth", {"algorithm", "secret_file", "public_key_file", "issuer",
                                    "audience", "dev_sign_in"})
    algorithm = raw.get("algorithm", "HS256")
    if algorithm not in ("HS256", "RS256", "ES256"):
        raise reader.fail("auth.algorithm", "expected HS256, RS256 or ES256")
    files: dict[str, Path | None] = {}
    for key in ("secret_file", "public_key_file"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise reader.fail(f"auth.{key}", "expected a path")
        files[key] = (path.parent / value).resolve() if value else None
    if algorithm != "HS256" and files["public_key_file"] is None:
        raise reader.fail("auth.public_key_file", f"{algorithm} needs the identity "
                          "provider's public key file")
    texts: dict[str, str | None] = {}
    for key in ("issuer", "audience"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise reader.fail(f"auth.{key}", "expected a non-empty string")
        texts[key] = value
    # `POST /auth/dev-sign-in` mints a token for any user name (and the operator role) to
    # whoever can reach a node: not the topology's to turn on (a file copied to real hosts
    # would take it along) but the local launcher's, for nodes on loopback only.
    dev_sign_in = raw.get("dev_sign_in", False)
    if not isinstance(dev_sign_in, bool):
        raise reader.fail("auth.dev_sign_in", "expected true or false")
    if dev_sign_in:
        raise reader.fail("auth.dev_sign_in", "development sign-in is not a topology setting: "
                          "`bookcluster up` turns it on when every node binds loopback "
                          "(node option --dev-sign-in)")
    return Auth(algorithm, files["secret_file"], files["public_key_file"], texts["issuer"],
                texts["audience"])


def _limits(reader: _Reader, raw: Any) -> Limits:
    raw = reader.mapping(raw, "limits")
    caps = ("seats_per_show", "holds_per_user", "seats_per_show_per_address",
            "holds_per_address", "user_writes_at_once")
    rates = ("user_writes", "ip_writes", "ip_reads", "user_reads", "ip_rejects")
    reader.known_keys(raw, "limits", {*caps, *rates})
    values: dict[str, Any] = {}
    for key in caps:
        if key in raw:
            values[key] = _positive_int(reader, raw[key], f"limits.{key}")
    for key in rates:
        if key in raw:
            rate_raw = reader.mapping(raw[key], f"limits.{key}")
            reader.known_keys(rate_raw, f"limits.{key}", {"per_second", "burst"})
            per_s = reader.require(rate_raw, f"limits.{key}", "per_second")
            if not isinstance(per_s, int | float) or isinstance(per_s, bool) or per_s <= 0:
                raise reader.fail(f"limits.{key}.per_second", "expected a positive number")
            burst = _positive_int(reader, reader.require(rate_raw, f"limits.{key}", "burst"),
                                  f"limits.{key}.burst")
            values[key] = Rate(float(per_s), burst)
    return Limits(**values)


def _positive_int(reader: _Reader, value: Any, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise reader.fail(key, "expected a positive integer")
    return value


def _settings(reader: _Reader, raw: Any, path: Path, run_dir: Path | None) -> Settings:
    raw = reader.mapping(raw, "settings")
    allowed = {"run_dir", "hold_ttl", "max_hold", "max_seats_per_booking", "sweep_interval",
               "durable", "redis_down_after", "catalog_start", "onsale_admit_ceiling",
               "checkin_opens_before", "checkin_closes_after", "refund_closes_before",
               "smtp_relay", "access_log"}
    reader.known_keys(raw, "settings", allowed)
    run_dir_value = raw.get("run_dir", ".run")
    if not isinstance(run_dir_value, str) or not run_dir_value:
        raise reader.fail("settings.run_dir", "expected a path")
    resolved_run_dir = run_dir or (path.parent / run_dir_value).resolve()
    out = Settings(run_dir=resolved_run_dir)
    if "hold_ttl" in raw:
        out = replace(out, hold_ttl_s=reader.duration(raw["hold_ttl"], "settings.hold_ttl"))
    if "max_hold" in raw:
        out = replace(out, max_hold_s=reader.duration(raw["max_hold"], "settings.max_hold"))
    if "sweep_interval" in raw:
        out = replace(out, sweep_interval_s=reader.duration(raw["sweep_interval"],
                                                            "settings.sweep_interval"))
    if "redis_down_after" in raw:
        out = replace(out, redis_down_after_s=reader.duration(raw["redis_down_after"],
                                                              "settings.redis_down_after"))
    if "max_seats_per_booking" in raw:
        cap = raw["max_seats_per_booking"]
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            raise reader.fail("settings.max_seats_per_booking", "expected a positive integer")
        out = replace(out, max_seats_per_booking=cap)
    for flag in ("durable", "access_log"):
        if flag in raw:
            if not isinstance(raw[flag], bool):
                raise reader.fail(f"settings.{flag}", "expected true or false")
            out = replace(out, **{flag: raw[flag]})
    if "onsale_admit_ceiling" in raw:
        ceiling = raw["onsale_admit_ceiling"]
        if not isinstance(ceiling, int | float) or isinstance(ceiling, bool) or ceiling <= 0:
            raise reader.fail("settings.onsale_admit_ceiling",
                              "expected a positive number (admissions a second)")
        out = replace(out, onsale_admit_ceiling=float(ceiling))
    if "checkin_opens_before" in raw:
        out = replace(out, checkin_opens_before_s=reader.duration(
            raw["checkin_opens_before"], "settings.checkin_opens_before"))
    if "checkin_closes_after" in raw:
        out = replace(out, checkin_closes_after_s=reader.duration(
            raw["checkin_closes_after"], "settings.checkin_closes_after"))
    if "refund_closes_before" in raw:
        out = replace(out, refund_closes_before_s=reader.signed_duration(
            raw["refund_closes_before"], "settings.refund_closes_before"))
    if "smtp_relay" in raw:
        out = replace(out, smtp_relay=reader.endpoint(raw["smtp_relay"], "settings.smtp_relay"))
    if "catalog_start" in raw:
        out = replace(out, catalog_start=_day(reader, raw["catalog_start"],
                                              "settings.catalog_start"))
    return out


def _day(reader: _Reader, value: Any, key: str) -> date:
    """A YAML date (2026-11-23, which YAML already reads as one) or its ISO text."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise reader.fail(key, "expected a date, YYYY-MM-DD") from None


def _region(reader: _Reader, name: str, raw: Any, all_regions: set[str]) -> Region:
    key = f"regions.{name}"
    raw = reader.mapping(raw, key)
    reader.known_keys(raw, key, {"redis", "postgres", "nodes", "worker"})
    redis_raw = reader.mapping(reader.require(raw, key, "redis"), f"{key}.redis")
    reader.known_keys(redis_raw, f"{key}.redis", {"master", "replicas", "sentinel"})
    master = reader.endpoint(reader.require(redis_raw, f"{key}.redis", "master"),
                             f"{key}.redis.master")
    sentinel = None
    if redis_raw.get("sentinel") is not None:
        sentinel = reader.endpoint(redis_raw["sentinel"], f"{key}.redis.sentinel")
    replicas_raw = reader.mapping(redis_raw.get("replicas") or {}, f"{key}.redis.replicas")
    replicas: dict[str, Endpoint] = {}
    for source, address in replicas_raw.items():
        rkey = f"{key}.redis.replicas.{source}"
        if source not in all_regions:
            raise reader.fail(rkey, f"unknown region {source!r}: "
                              "a replica copies a region's master")
        replicas[source] = reader.endpoint(address, rkey)
    missing = sorted(all_regions - set(replicas))
    if missing:
        raise reader.fail(f"{key}.redis.replicas",
                          f"needs a replica of every region's master; missing {', '.join(missing)}")

    pg_raw = reader.mapping(reader.require(raw, key, "postgres"), f"{key}.postgres")
    reader.known_keys(pg_raw, f"{key}.postgres", {"primary", "standby", "patroni", "etcd"})
    primary = reader.endpoint(reader.require(pg_raw, f"{key}.postgres", "primary"),
                              f"{key}.postgres.primary")
    standby = None
    if pg_raw.get("standby") is not None:
        standby = reader.endpoint(pg_raw["standby"], f"{key}.postgres.standby")
    api, etcd = _patroni(reader, pg_raw, f"{key}.postgres", 1 if standby is None else 2)

    nodes_raw = reader.require(raw, key, "nodes")
    if not isinstance(nodes_raw, list) or not nodes_raw:
        raise reader.fail(f"{key}.nodes", "expected a non-empty list of 'host:port'")
    nodes = tuple(reader.endpoint(n, f"{key}.nodes[{i}]") for i, n in enumerate(nodes_raw))
    worker = reader.endpoint(raw["worker"], f"{key}.worker") if raw.get("worker") else None
    return Region(name, master, MappingProxyType(replicas), primary, standby, nodes, worker,
                  api, etcd, sentinel)


def _patroni(reader: _Reader, raw: dict[str, Any], key: str,
             members: int) -> tuple[tuple[Endpoint, ...], tuple[Endpoint, ...]]:
    """`patroni`: one REST API per member; `etcd`: the region's etcd, client then peer."""
    if raw.get("patroni") is None and raw.get("etcd") is None:
        return (), ()  # plain PostgreSQL: tools that start a server of their own
    lists = []
    for name, want, what in (("patroni", members, "one REST API address per member"),
                             ("etcd", 2, "etcd's client address, then its peer address")):
        value = reader.require(raw, key, name)
        if not isinstance(value, list) or len(value) != want:
            raise reader.fail(f"{key}.{name}", f"expected a list of {want} 'host:port': {what}")
        lists.append(tuple(reader.endpoint(v, f"{key}.{name}[{i}]")
                           for i, v in enumerate(value)))
    return lists[0], lists[1]


def _check_unique_endpoints(reader: _Reader, regions: dict[str, Region],
                            extra: list[tuple[str, Endpoint]] | None = None) -> None:
    seen: dict[tuple[str, int], str] = {}
    labelled = [(f"regions.{region.name}.{label}", ep)
                for region in regions.values() for label, ep in region.endpoints()]
    for key, ep in labelled + (extra or []):
        where = (ep.host, ep.port)
        if where in seen:
            raise reader.fail(key, f"duplicate host:port {ep} (also used by {seen[where]})")
        seen[where] = key
