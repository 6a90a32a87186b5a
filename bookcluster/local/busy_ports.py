"""Which of the ports a launcher will bind are taken already, and by whom.

`bookcluster up` checks every port before it starts anything: a port in use would
otherwise surface half a minute later as a child that "exited during start-up".
A port counts as taken when a bind with SO_REUSEADDR (what our servers do) fails;
the holder is found the way `ss -p` does it, without psutil: the socket's inode
from /proc/net/tcp{,6}, then the process with an fd on `socket:[inode]`. Another
user's processes are only visible to root: then the holder is left unnamed.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bookcluster.topology.addresses import listen_host
from bookcluster.topology.model import Endpoint, Topology

PROC = Path("/proc")
TCP_LISTEN = "0A"
TCP_TIME_WAIT = "06"
# Processes a launcher that died moments ago left behind are killed just before the
# check (`kill_recorded`); their sockets close as the kernel reaps them.
RECHECKS_AFTER_KILL = 5
RECHECK_PAUSE_S = 0.2


class PortsInUse(RuntimeError):
    """A port the launcher would bind is taken: nothing was started."""


@dataclass(frozen=True)
class BusyPort:
    label: str  # e.g. north.node.1
    endpoint: Endpoint
    reason: str  # e.g. "Address already in use"
    holder: str | None  # e.g. "pid 1234 python3 -m http.server 8101"

    def line(self) -> str:
        held = f"held by {self.holder}" if self.holder else self.reason
        return f"{self.endpoint} ({self.label}): {held}"


def runs_gateway(topology: Topology, only: Sequence[str] | None) -> bool:
    """Whether the launcher of `only` (None: every region) runs the payment gateway: the
    launcher of the topology's first region does."""
    return topology.payments is not None and (
        only is None or next(iter(topology.regions)) in only)


def planned(topology: Topology, only: Sequence[str] | None) -> list[tuple[str, Endpoint]]:
    """Every (label, endpoint) the launcher of `only` (None: every region) binds: stores,
    Patroni's API, etcd (client and peer), nodes, worker, and the payment gateway if it
    runs it. The WAN proxy's ports are picked free when it starts (`local.ports`)."""
    found: list[tuple[str, Endpoint]] = []
    for name in topology.regions:
        if only is None or name in only:
            found += [(f"{name}.{label}", ep) for label, ep in topology.region(name).endpoints()]
    if runs_gateway(topology, only) and topology.payments is not None:
        found.append(("payments.gateway", topology.payments.gateway))
    return found


def bind_error(ep: Endpoint) -> str | None:
    """Why a server could not bind `ep` now (None: it could)."""
    host = listen_host(ep.host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, ep.port))
        except OSError as exc:
            return exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
    return None


def socket_inodes(table: str, port: int) -> list[int]:
    """Inodes of the sockets bound to local `port` in one /proc/net/tcp{,6} table,
    listeners first; TIME_WAIT entries (no owner, no obstacle) are left out."""
    listening: list[int] = []
    other: list[int] = []
    for row in table.splitlines()[1:]:
        fields = row.split()
        if len(fields) < 10:
            continue
        local, state, inode = fields[1], fields[3], int(fields[9])
        if int(local.rsplit(":", 1)[1], 16) != port or state == TCP_TIME_WAIT or inode == 0:
            continue
        (listening if state == TCP_LISTEN else other).append(inode)
    return listening + other


def holders(inodes: Iterable[int], proc: Path = PROC) -> dict[int, int]:
    """inode -> pid of a process with an fd on that socket (those visible to us)."""
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    found: dict[int, int] = {}
    if not wanted:
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target in wanted:
                found.setdefault(wanted[target], int(entry.name))
        if len(found) == len(wanted):
            break
    return found


def describe(pid: int, proc: Path = PROC) -> str:
    """`pid 1234 redis-server 127.0.0.1:6401`: the pid and its command line, shortened."""
    try:
        argv = (proc / str(pid) / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        command = " ".join([os.path.basename(argv[0].decode(errors="replace")),
                            *(a.decode(errors="replace") for a in argv[1:])])
    except (OSError, IndexError):
        command = ""
    if len(command) > 100:
        command = command[:97] + "..."
    return f"pid {pid} {command}".rstrip()


def holder_of(port: int, proc: Path = PROC) -> str | None:
    inodes: list[int] = []
    for table in ("tcp", "tcp6"):
        try:
            inodes += socket_inodes((proc / "net" / table).read_text(), port)
        except OSError:
            continue
    owners = holders(inodes, proc)
    for inode in inodes:
        if inode in owners:
            return describe(owners[inode], proc)
    return None


def busy(endpoints: Iterable[tuple[str, Endpoint]], rechecks: int = 0) -> list[BusyPort]:
    """The endpoints a server cannot bind now, each with its holder where visible. With
    `rechecks`, ports busy at first are checked again that many times, RECHECK_PAUSE_S
    apart: processes killed a moment ago may still hold theirs."""
    todo = list(endpoints)
    for attempt in range(rechecks + 1):
        errors = {ep: why for _, ep in todo if (why := bind_error(ep)) is not None}
        todo = [(label, ep) for label, ep in todo if ep in errors]
        if not todo or attempt == rechecks:
            break
        time.sleep(RECHECK_PAUSE_S)
    return [BusyPort(label, ep, errors[ep], holder_of(ep.port)) for label, ep in todo]


def check(topology: Topology, only: Sequence[str] | None, rechecks: int = 0) -> None:
    """Raise PortsInUse naming every port of the launcher of `only` that is taken."""
    taken = busy(planned(topology, only), rechecks)
    if taken:
        raise PortsInUse("nothing started: "
                         + ("a port" if len(taken) == 1 else f"{len(taken)} ports")
                         + " of the topology in use:\n"
                         + "\n".join(f"  {port.line()}" for port in taken))
