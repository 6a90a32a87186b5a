"""Where the CPU time goes: each process group of a bench cluster, the bench's own
processes, and the whole machine (which other users may share).

Groups are read from `/proc/<pid>/stat` (utime + stime of each process and all its
descendants, plus reaped children of the group's own processes, e.g. PostgreSQL
backends that exited). The load generators report their own `getrusage`. The
machine's busy time comes from the first line of `/proc/stat` (all cores, every
state but idle and iowait): what no group accounts for is the machine's
*unaccounted* busy share, e.g. other users' processes or the kernel's own work.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bookcluster.local.faults import process_tree

if TYPE_CHECKING:
    from .local import BenchCluster

CLK_TCK = os.sysconf("SC_CLK_TCK")
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


def _cpu_ticks(pid: int, with_children: bool) -> int:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if with_children:  # reaped children, e.g. PostgreSQL backends that exited
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def cpu_seconds(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each group: its processes and all their descendants."""
    out = {}
    for name, pids in groups.items():
        ticks = 0
        for pid in pids:
            tree = process_tree(pid)
            ticks += _cpu_ticks(pid, True) + sum(_cpu_ticks(p, False) for p in tree[1:])
        out[name] = ticks / CLK_TCK
    return out


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores so far, from /proc/stat."""
    with open("/proc/stat") as fh:
        ticks = [int(x) for x in fh.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks) - idle, sum(ticks)


def own_cpu_s() -> float:
    """This process alone: not its children (the load generators report their own)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Snapshot:
    groups: dict[str, float]
    bench_s: float
    busy_ticks: int
    total_ticks: int
    at: float  # time.perf_counter()


def snapshot(groups: dict[str, list[int]]) -> Snapshot:
    busy, total = machine_ticks()
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
    capacity_s = (after.total_ticks - before.total_ticks) / CLK_TCK  # seconds x cores
    busy_s = (after.busy_ticks - before.busy_ticks) / CLK_TCK
    elapsed = after.at - before.at

    def share(value: float) -> float | None:
        return round(value / capacity_s, 3) if capacity_s > 0 else None

    return {"cpu_s": used, "window_s": round(elapsed, 3),
            "machine_busy_share": share(busy_s), "accounted_share": share(accounted),
            "unaccounted_share": share(max(0.0, busy_s - accounted)),
            "share": {n: round(v / accounted, 3) if accounted else None
                      for n, v in used.items()}}


def service_cpu_s(cpu_s: dict[str, float]) -> float:
    """The whole cluster's CPU seconds: every group but the harness."""
    return sum(v for k, v in cpu_s.items() if k not in HARNESS)
