"""Where the CPU time goes: each process group of a bench cluster, the bench's own
processes, and the whole machine (which other users may share).

Groups are read with psutil (user + system time of each process and all its
descendants, plus reaped children of the group's own processes, e.g. PostgreSQL
backends that exited). The load generators report their own `getrusage`. The
machine's busy time is psutil's `cpu_times()` (all cores, every state but idle and
iowait): what no group accounts for is the machine's
*unaccounted* busy share, e.g. other users' processes or the kernel's own work.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from .local import BenchCluster

# launcher role -> the group its CPU is reported under
GROUP_OF_ROLE = {"node": "nodes", "redis-master": "redis masters",
                 "redis-replica": "redis replicas", "redis-sentinel": "sentinels",
                 "pg-member": "postgres", "pg-primary": "postgres", "pg-standby": "postgres",
                 "etcd": "etcd", "wanproxy": "wan proxy", "worker": "workers",
                 "gateway": "gateway"}
# Not the service: what drives and watches it.
HARNESS = ("client", "bench")


def cpu_groups(cluster: BenchCluster) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for child in cluster.launcher.supervisor.children:
        name = GROUP_OF_ROLE.get(child.spec.role, child.spec.role)
        groups.setdefault(name, []).append(child.pid)
    return groups


def _cpu_s(process: psutil.Process, with_children: bool) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:  # gone since we listed it
        return 0.0
    used = times.user + times.system
    if with_children:  # reaped children, e.g. PostgreSQL backends that exited
        used += times.children_user + times.children_system
    return used


def cpu_seconds(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each group: its processes and all their descendants."""
    out = {}
    for name, pids in groups.items():
        used = 0.0
        for pid in pids:
            try:
                root = psutil.Process(pid)
                tree = root.children(recursive=True)
            except psutil.Error:
                continue
            used += _cpu_s(root, True) + sum(_cpu_s(p, False) for p in tree)
        out[name] = used
    return out


def machine_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of all cores so far (busy: every state but idle and
    iowait)."""
    times = psutil.cpu_times()
    total = sum(times)
    return total - times.idle - times.iowait, total


def own_cpu_s() -> float:
    """This process alone: not its children (the load generators report their own)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Snapshot:
    groups: dict[str, float]
    bench_s: float
    busy_s: float
    total_s: float
    at: float  # time.perf_counter()


def snapshot(groups: dict[str, list[int]]) -> Snapshot:
    busy, total = machine_s()
    return Snapshot(cpu_seconds(groups), own_cpu_s(), busy, total, time.perf_counter())


def usage(before: Snapshot, after: Snapshot, client_cpu_s: float) -> dict[str, Any]:
    """CPU seconds per group between two snapshots, the load generators as `client`
    and this process as `bench`; and shares of the machine's capacity over the window:
    `busy_share_of_machine` (all of it, whoever used it), `accounted_share` (our
    groups) and `unaccounted_share` (the rest of the busy time)."""
    used = {name: round(after.groups[name] - before.groups.get(name, 0.0), 3)
            for name in after.groups}
    used["client"] = round(client_cpu_s, 3)
    used["bench"] = round(after.bench_s - before.bench_s, 3)
    accounted = sum(used.values())
    capacity_s = after.total_s - before.total_s  # seconds x cores
    busy_s = after.busy_s - before.busy_s
    elapsed = after.at - before.at

    def share(value: float) -> float | None:
        return round(value / capacity_s, 3) if capacity_s > 0 else None

    return {"cpu_s": used, "window_s": round(elapsed, 3),
            "machine_busy_s": round(busy_s, 3),  # whoever used it
            "machine_busy_share": share(busy_s), "accounted_share": share(accounted),
            "unaccounted_share": share(max(0.0, busy_s - accounted)),
            "share": {n: round(v / accounted, 3) if accounted else None
                      for n, v in used.items()}}


def service_cpu_s(cpu_s: dict[str, float]) -> float:
    """The whole cluster's CPU seconds: every group but the harness."""
    return sum(v for k, v in cpu_s.items() if k not in HARNESS)
