"""Fault injection on local processes: pause, resume, kill a whole process tree.

A process tree, not a process group: PostgreSQL backends call setsid() and
leave the postmaster's group, so signalling the group would leave them
serving queries while the "stopped" server looks paused.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants, parents first."""
    children = _children_map()
    tree, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def signal_tree(pid: int, sig: int) -> list[int]:
    tree = process_tree(pid)
    for member in tree:
        try:
            os.kill(member, sig)
        except ProcessLookupError:
            pass
    return tree


@contextmanager
def paused(pid: int) -> Iterator[list[int]]:
    """SIGSTOP a process tree for the duration of the block, then SIGCONT it."""
    tree = signal_tree(pid, signal.SIGSTOP)
    try:
        yield tree
    finally:
        for member in tree:
            try:
                os.kill(member, signal.SIGCONT)
            except ProcessLookupError:
                pass
