"""`bookcluster status`: every process of the running local cluster, its health and
replication lag, as a table or JSON (its fields are an interface: scripts read them).

The processes are the launcher's state file's; each is asked through the one
prober (`bookcluster.stores.probe`). Whether a process is alive is the caller's
question (`alive`: the launcher's pid check, one layer up).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from bookcluster.stores.probe import probe_all
from bookcluster.stores.sentinel_api import server_name
from bookcluster.topology.model import Endpoint, Topology
from bookcluster.topology.runstate import read_state

JSON_FIELDS = ("name", "region", "role", "pid", "host", "port", "address", "healthy",
               "source", "lag_bytes", "link", "epoch", "error", "api", "member", "pg_role",
               "leader", "timeline", "redis_role", "master", "repl_offset", "sentinel_masters",
               "now")  # what it is now (leader, sync standby, Redis master...): `now()`


def launcher_regions(topology: Topology, state: dict[str, Any] | None) -> list[str]:
    """The regions the run folder's launcher runs (every one, for a state written before
    `up --region` existed)."""
    if state is None:
        return []
    return list(state.get("regions") or topology.regions)


async def status_command(topology: Topology, as_json: bool, region: str | None,
                         alive: Callable[[int], bool], wide: bool = False) -> int:
    state = read_state(topology.settings.run_dir)
    if state is None:
        print(json.dumps({"running": False, "processes": []}) if as_json
              else f"nothing running from {topology.settings.run_dir}")
        return 1
    processes = [p for p in state["processes"] if region is None or p["region"] == region]
    rows = await probe_all(processes, topology.secrets)
    for row in rows:
        row["alive"] = alive(row["pid"])
        row["healthy"] = bool(row.get("healthy")) and row["alive"]
    rows = in_region_order(topology, rows)
    masters = redis_masters(topology, rows)
    for row in rows:
        row["now"] = now(row, masters)
    if as_json:
        print(json.dumps(report(topology, state, rows, alive(state["launcher_pid"])), indent=2))
    else:
        print_table(rows, masters, wide)
        if masters:
            print("\nRedis masters as Sentinel sees them:")
            for name, m in masters.items():
                flags = f", {m['flags']}" if m["flags"] != "master" else ""
                print(f"  {name:<10} {m['address']} ({m['server']}{flags})")
    return 0 if all(r["healthy"] for r in rows) else 1


def report(topology: Topology, state: dict[str, Any], rows: list[dict[str, Any]],
           running: bool) -> dict[str, Any]:
    """`status --json`."""
    return {"running": running, "launcher_pid": state["launcher_pid"],
            "regions": launcher_regions(topology, state),
            "redis_masters": redis_masters(topology, rows),
            "processes": [{k: r.get(k) for k in JSON_FIELDS} for r in rows]}


def redis_masters(topology: Topology, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per region, where the first healthy sentinel sees its master (and which server that
    is, and Sentinel's flags for it: `master`, or e.g. `master,s_down,o_down`)."""
    for row in rows:
        if row["role"] == "redis-sentinel" and row.get("sentinel_masters"):
            return {region: {**seen, "server": server_name(topology, _endpoint(seen["address"]))}
                    for region, seen in sorted(row["sentinel_masters"].items())}
    return {}


def _endpoint(address: str) -> Endpoint:
    host, _, port = address.rpartition(":")
    return Endpoint(host, int(port))


PG_ROLES = {"leader": "pg leader", "primary": "pg leader", "master": "pg leader",
            "sync_standby": "pg sync standby", "standby_leader": "pg standby leader",
            "replica": "pg replica"}
KINDS = {"redis-sentinel": "sentinel", "etcd": "etcd", "node": "app node", "worker": "worker",
         "gateway": "payment gateway", "wanproxy": "WAN proxy", "pg-primary": "pg primary",
         "pg-standby": "pg standby"}
# Within a region: stores first (as they are now), then the processes that use them.
ROLE_ORDER = ("redis-master", "redis-replica", "redis-sentinel", "pg-member", "pg-primary",
              "pg-standby", "etcd", "node", "worker")
WIDTH = 100  # the default table fits this many columns; `--wide` shows every column


def now(row: dict[str, Any], masters: dict[str, dict[str, Any]] | None = None) -> str:
    """What a process is now, not the topology slot it was started in: a PostgreSQL
    member as Patroni names it (leader, sync standby, replica), a Redis server as
    Sentinel sees it (master of its region) or as it says it is (replica of a region)."""
    role = row["role"]
    if role == "pg-member":
        return PG_ROLES.get(str(row.get("pg_role")), f"pg {row.get('pg_role') or '?'}")
    if role in ("redis-master", "redis-replica"):
        source = row.get("source") or row["region"]
        seen = (masters or {}).get(source)
        if seen is not None and seen.get("address") == _host_port(row):
            return f"redis master ({source})"
        if row.get("redis_role") == "master":
            return (f"redis master ({source})" if seen is None
                    else f"redis master ({source}), not Sentinel's")
        if row.get("redis_role") == "replica":
            return f"redis replica ({source})"
        return "redis ?"
    return KINDS.get(role, str(role))


def in_region_order(topology: Topology, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Regions in the topology's order (others after), each's stores before its nodes;
    the launcher's order within a kind."""
    regions = {name: i for i, name in enumerate(topology.regions)}
    kinds = {role: i for i, role in enumerate(ROLE_ORDER)}
    return sorted(rows, key=lambda r: (regions.get(r["region"], len(regions)),
                                       kinds.get(r["role"], len(kinds))))


def table(rows: list[dict[str, Any]], masters: dict[str, dict[str, Any]] | None = None,
          wide: bool = False) -> list[str]:
    """The status table's lines: by default PROCESS, NOW, ADDRESS, HEALTH, LAG, EPOCH in
    at most WIDTH columns; `wide` adds the slot it was started in, the pid and what a
    replica follows. Lag is on the copy that lags (behind its leader or master)."""
    head = ["PROCESS", "NOW", "ADDRESS", "HEALTH", "LAG", "EPOCH"]
    if wide:
        head += ["STARTED AS", "PID", "DETAIL"]
    body = []
    for r in rows:
        lag = f"{r['lag_bytes']:,} B" if r.get("lag_bytes") is not None else ""
        cells = [r["name"], now(r, masters), str(r["address"]) if wide else _host_port(r),
                 "ok" if r.get("healthy") else "DOWN", lag, str(r.get("epoch") or "")]
        if wide:
            cells += [r["role"], str(r["pid"]), _patroni_detail(r) or _redis_detail(r)]
        body.append(cells)
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    right = {head.index("LAG"), head.index("EPOCH")} | ({head.index("PID")} if wide else set())
    if not wide:  # the NOW column gives way if names are long
        over = sum(widths) + 2 * (len(widths) - 1) - WIDTH
        widths[1] = max(len(head[1]), widths[1] - max(0, over))
    lines = []
    for i, cells in enumerate([head, *body]):
        out = [_fit(c, w, i in right) for i, c in enumerate(cells) for w in [widths[i]]]
        lines.append("  ".join(out).rstrip())
        if i == 0:
            lines.append("-" * len(lines[0]))
    return lines


def _host_port(row: dict[str, Any]) -> str:
    """Where a process listens (its address may be a URL or a DSN)."""
    return f"{row['host']}:{row['port']}" if row.get("host") else str(row["address"])


def _fit(text: str, width: int, right: bool) -> str:
    if len(text) > width:
        text = text[:width - 1] + "…"
    return text.rjust(width) if right else text.ljust(width)


def print_table(rows: list[dict[str, Any]], masters: dict[str, dict[str, Any]] | None = None,
                wide: bool = False) -> None:
    print("\n".join(table(rows, masters, wide)))


def _redis_detail(row: dict[str, Any]) -> str:
    if row.get("redis_role") == "replica":
        return f"follows {row.get('master')}, link {row.get('link')}"
    return ""


def _patroni_detail(row: dict[str, Any]) -> str:
    """A member's leader as Patroni names it (its timeline is in `--json`: a new one
    comes with every restart, not only with a failover)."""
    if row["role"] != "pg-member" or not row.get("pg_role"):
        return ""
    if not row.get("leader"):
        return "no leader"
    if row.get("pg_role") in ("leader", "primary", "master"):
        return f"member {row.get('member') or '?'}"
    return f"member {row.get('member') or '?'}, leader {row['leader']}"
