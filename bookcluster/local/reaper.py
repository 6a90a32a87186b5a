"""Run one command as the owner of every process it leaves behind.

    python -m bookcluster.local.reaper [--user postgres] -- patroni /path/to/member.yml

Patroni starts PostgreSQL the way pg_ctl does: through a helper that exits, so
the postmaster is orphaned on purpose (it survives a Patroni restart). Orphans
go to the nearest "child subreaper", which this process is, so the postmaster
stays inside this process's tree: `process_tree` (stop, SIGSTOP/SIGKILL fault
injection) sees Patroni and its PostgreSQL as one member, and nothing outlives it:

- when the launcher dies, the kernel sends us SIGTERM (PR_SET_PDEATHSIG), which we
  pass on, as we do any SIGTERM/SIGINT;
- when the command exits, for whatever reason, every process still in our tree is
  killed and we exit with its status.

With `--user`, the command runs as that user (PostgreSQL refuses root) while we stay
who we are: our interpreter may be out of that user's reach (see scripts/bootstrap).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

from bookcluster.local.faults import process_tree

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
# How long the command may take to stop after SIGTERM before the tree is killed
# (Patroni stops PostgreSQL with a fast shutdown and hands over the leader key).
STOP_GRACE_S = 20.0


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _kill_tree(root: int) -> None:
    for pid in process_tree(root)[1:]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _reap(child: int) -> int | None:
    """Reap every dead child (orphans included); the exit code of `child` if it died."""
    found = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        if pid == child:
            found = os.waitstatus_to_exitcode(status)


def main(argv: list[str]) -> int:
    user = None
    if argv[:1] == ["--user"] and len(argv) > 1:
        user, argv = argv[1], argv[2:]
    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        print("usage: python -m bookcluster.local.reaper [--user USER] -- COMMAND [ARG...]",
              file=sys.stderr)
        return 2
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # replaces the launcher's SIGKILL: we clean up
    if os.getppid() == 1:  # the launcher died before prctl took effect
        return 1
    child = subprocess.Popen(command, user=user)
    stop_by: list[float] = []

    def forward(signum: int, _frame: object) -> None:
        if not stop_by:
            stop_by.append(time.monotonic() + STOP_GRACE_S)
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while (status := _reap(child.pid)) is None:  # orphans are reaped as they die
        if stop_by and time.monotonic() > stop_by[0]:
            child.kill()
        time.sleep(0.1)
    _kill_tree(os.getpid())
    time.sleep(0.1)
    _reap(child.pid)
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
