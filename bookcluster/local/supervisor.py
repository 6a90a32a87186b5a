"""Child processes of the launcher: start, record, stop — and never leave one behind.

Every child runs in its own session (its own process group), so a terminal's
Ctrl-C reaches only the launcher, which then stops them: clients first, then
the stores, regions in parallel (`Supervisor.stop`). Each child also gets
PR_SET_PDEATHSIG=SIGKILL: if the launcher itself is killed, the kernel kills the
children too. The state file lets
`bookcluster down` and `status` find the processes from another shell.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bookcluster.local.faults import process_tree
from bookcluster.topology import environment
from bookcluster.topology.runstate import STATE_FILE, read_state

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
# The stores' stop order (`Supervisor.stop`): two chains of tiers. PostgreSQL's starts
# with the clients: Patroni takes about two seconds (its loop, its REST API) before it
# asks PostgreSQL for a fast shutdown, by which time a node's writes in flight, bounded
# by the 1.2 s write deadline, have ended (a worker's job cut short is retried: jobs run
# at least once). Redis's starts once the clients are gone: it stops in a fraction of a
# second, and a hold in flight needs it.
PG_CHAIN = (("pg-member", "pg-primary", "pg-standby"), ("etcd",))
# How long the clients get before they are killed when the whole cluster stops: a
# node's writes in flight end within the 1.2 s write deadline and it takes no new
# ones, so past this it is only tearing down (measured: 4.1 s for nineteen of them on
# two cores, competing with Patroni's shutdown). A worker's job cut short is retried.
CLIENT_GRACE_S = 2.5
REDIS_CHAIN = (("redis-sentinel",), ("redis-replica",), ("redis-master",))


@dataclass(frozen=True)
class ProcessSpec:
    name: str  # e.g. "north.redis.replica.south"
    region: str
    role: str  # redis-master | redis-replica | etcd | pg-member | node | ...
    host: str
    port: int
    argv: tuple[str, ...]
    log_path: Path
    address: str  # URL or DSN a client uses
    user: str | None = None  # run as this user (PostgreSQL refuses root)
    source: str | None = None  # for replicas: the region whose master it copies
    stop_signal: int = signal.SIGTERM
    env: dict[str, str] = field(default_factory=dict)
    api: str | None = None  # PostgreSQL members: the URL of their Patroni REST API
    # The child's file-creation mask; Redis writes its rewritten config files (which
    # hold its password) with 0644 & ~umask.
    umask: int | None = None


@dataclass
class Child:
    spec: ProcessSpec
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid


def _die_with_parent() -> None:
    """Runs in the child between fork and exec (after the uid switch, which would clear it)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the launcher died before prctl took effect
        os._exit(1)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Supervisor:
    """Owns the launcher's children. `stop()` is idempotent and safe after crashes."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.children: list[Child] = []
        self.meta: dict[str, Any] = {}

    @property
    def state_path(self) -> Path:
        return self.run_dir / STATE_FILE

    def start(self, spec: ProcessSpec) -> Child:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**environment.inherited(), **spec.env}
        with open(spec.log_path, "ab") as logfile:
            popen = subprocess.Popen(
                spec.argv,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=spec.user,
                preexec_fn=_die_with_parent,
                umask=-1 if spec.umask is None else spec.umask,
                env=env,
            )
        child = Child(spec, popen)
        self.children.append(child)
        self.write_state()
        log.debug("started %s pid=%d", spec.name, popen.pid)
        return child

    def crashed(self) -> list[Child]:
        return [c for c in self.children if c.popen.poll() is not None]

    def write_state(self) -> None:
        state = {**self.meta, "launcher_pid": os.getpid(),
                 "processes": [_record(c) for c in self.children]}
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_path)

    def stop(self, timeout_s: float = 15.0,
             progress: Callable[[str], None] | None = None) -> dict[str, float]:
        """Stop every child in two chains side by side, each a tier at a time across all
        regions: Patroni members then etcd (a leader that stops releases its key through
        etcd), beginning with the clients (see PG_CHAIN); and the clients (nodes,
        workers, the gateway: whatever is not a store), then sentinels, replicas,
        masters (no sentinel may see a master go and fail it over). A tier's children
        are signalled together and share one deadline, so a stop takes about as long as
        the slower chain, not a sum over forty processes (full cluster on the 2-core
        box after a load test: 4.1 s; 6.1 s with the PostgreSQL chain after the
        clients). `progress` hears of each
        region as its last process stops. Returns how long each tier took (seconds, by
        its first role)."""
        began = time.monotonic()
        children = list(reversed(self.children))
        left = Counter(c.spec.region for c in children)
        lock = threading.Lock()
        took: dict[str, float] = {}

        def stopped(group: list[Child]) -> None:
            with lock:
                for child in group:
                    left[child.spec.region] -= 1
                    if left[child.spec.region] == 0 and progress is not None:
                        label = child.spec.region if child.spec.region != "-" else child.spec.name
                        progress(f"  {label}: stopped ({time.monotonic() - began:.1f}s)")

        def run(tiers: Sequence[tuple[str, Collection[str]]]) -> None:
            for label, roles in tiers:
                group = [c for c in children if c.spec.role in roles]
                if group:
                    tier_began = time.monotonic()
                    _stop_all(group, min(timeout_s, CLIENT_GRACE_S) if label == "clients"
                              else timeout_s)
                    took[label] = time.monotonic() - tier_began
                    stopped(group)

        stores = {role for tier in (*PG_CHAIN, *REDIS_CHAIN) for role in tier}
        clients = {c.spec.role for c in children if c.spec.role not in stores}
        with ThreadPoolExecutor(1) as pool:
            postgres = pool.submit(run, [(tier[0], tier) for tier in PG_CHAIN])
            run([("clients", clients), *((tier[0], tier) for tier in REDIS_CHAIN)])
            postgres.result()
        self.children.clear()
        self.state_path.unlink(missing_ok=True)
        return took

    def stop_child(self, child: Child, timeout_s: float = 15.0) -> None:
        _stop(child, timeout_s)
        self.children.remove(child)
        self.write_state()


def _stop(child: Child, timeout_s: float) -> None:
    _stop_all([child], timeout_s)


def _stop_all(children: list[Child], timeout_s: float) -> None:
    """Signal every child, then wait for each within one shared deadline."""
    trees = {c.pid: process_tree(c.pid) for c in children if c.popen.poll() is None}
    for child in children:
        if child.pid in trees:
            _signal_group(child.pid, child.spec.stop_signal)
    deadline = time.monotonic() + timeout_s
    for child in children:
        if child.pid in trees:
            _wait(child, max(0.0, deadline - time.monotonic()))
            for pid in trees[child.pid]:  # stragglers: PostgreSQL backends have own groups
                _kill(pid)
        _signal_group(child.pid, signal.SIGKILL)
        child.popen.wait()


def _record(child: Child) -> dict[str, Any]:
    spec = asdict(child.spec)
    spec.pop("argv")
    spec.pop("env")
    spec["log_path"] = str(child.spec.log_path)
    return {**spec, "pid": child.pid}


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait(child: Child, timeout_s: float) -> None:
    try:
        child.popen.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop within %.1fs; killing it", child.spec.name, timeout_s)


def wait_stopped(processes: list[dict[str, Any]], timeout_s: float,
                 progress: Callable[[str], None]) -> bool:
    """Watch recorded processes (another launcher's) until all are gone, telling
    `progress` of each region as its last one goes. Returns whether all went."""
    began = time.monotonic()
    regions: dict[str, list[int]] = {}
    for proc in processes:
        label = proc["region"] if proc["region"] != "-" else proc["name"]
        regions.setdefault(label, []).append(proc["pid"])
    while regions and time.monotonic() - began < timeout_s:
        for label, pids in list(regions.items()):
            if not any(pid_alive(pid) for pid in pids):
                progress(f"  {label}: stopped ({time.monotonic() - began:.1f}s)")
                del regions[label]
        time.sleep(0.1)
    return not regions


def kill_recorded(run_dir: Path, timeout_s: float = 15.0) -> int:
    """Stop processes a dead launcher left in its state file. Returns how many were alive."""
    state = read_state(run_dir)
    if state is None:
        return 0
    alive = [p for p in reversed(state["processes"]) if pid_alive(p["pid"])]
    trees = [pid for p in alive for pid in process_tree(p["pid"])]
    for proc in alive:
        _signal_group(proc["pid"], proc.get("stop_signal", signal.SIGTERM))
    deadline = time.monotonic() + timeout_s
    while any(pid_alive(p["pid"]) for p in alive) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in trees:
        _kill(pid)
    (run_dir / STATE_FILE).unlink(missing_ok=True)
    return len(alive)
