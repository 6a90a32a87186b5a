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
               "leader", "timeline", "redis_role", "master", "repl_offset", "sentinel_masters")


def launcher_regions(topology: Topology, state: dict[str, Any] | None) -> list[str]:
    """The regions the run folder's launcher runs (every one, for a state written before
    `up --region` existed)."""
    if state is None:
        return []
    return list(state.get("regions") or topology.regions)


async def status_command(topology: Topology, as_json: bool, region: str | None,
                         alive: Callable[[int], bool]) -> int:
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
    if as_json:
        print(json.dumps(report(topology, state, rows, alive(state["launcher_pid"])), indent=2))
    else:
        print_table(rows)
        masters = redis_masters(topology, rows)
        if masters:
            print("\nRedis masters as Sentinel sees them: " + ", ".join(
                f"{region} {m['address']} ({m['server']}"
                + (f", {m['flags']})" if m["flags"] != "master" else ")")
                for region, m in masters.items()))
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


def print_table(rows: list[dict[str, Any]]) -> None:
    """One line per process; PostgreSQL members add what Patroni says: role, leader,
    timeline (their lag is behind the leader); Redis servers their role now (and the
    master a replica follows; their lag is behind it); nodes and workers their
    topology epoch."""
    header = (f"{'PROCESS':<28} {'ROLE':<14} {'PID':>7}  {'ADDRESS':<50} {'HEALTH':<8} "
              f"{'EPOCH':>5}  {'LAG':<10} NOW")
    print(header)
    print("-" * len(header))
    for r in rows:
        lag = f"{r['lag_bytes']} B" if r.get("lag_bytes") is not None else ""
        health = "ok" if r.get("healthy") else "DOWN"
        epoch = r.get("epoch") or ""  # nodes and workers: the topology epoch they route by
        detail = _patroni_detail(r) or _redis_detail(r)
        print(f"{r['name']:<28} {r['role']:<14} {r['pid']:>7}  {r['address']:<50} "
              f"{health:<8} {epoch:>5}  {lag:<10} {detail}".rstrip())


def _redis_detail(row: dict[str, Any]) -> str:
    if row.get("redis_role") == "master":
        return "master"
    if row.get("redis_role") == "replica":
        return f"replica of {row.get('master')}, link {row.get('link')}"
    return ""


def _patroni_detail(row: dict[str, Any]) -> str:
    if row["role"] != "pg-member" or not row.get("pg_role"):
        return ""
    detail = f"{row['pg_role']}, timeline {row.get('timeline')}"
    if row.get("leader") and row["pg_role"] != "leader":
        detail += f", leader {row['leader']}"
    elif not row.get("leader"):
        detail += ", no leader"
    return detail
