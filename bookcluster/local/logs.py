"""The children's log files: what to show of one that died, and a cap on their size.

Each child writes its stdout and stderr to `<run_dir>/logs/<name>.log`, opened for
appending (O_APPEND). At every `up` the previous run's log becomes `<name>.log.1`,
so a log holds one run; while the cluster runs, a log past `LOG_CAP_BYTES` is
rotated in place (logrotate's copytruncate: its tail copied to `.1`, then truncated;
the child's appending writes go on at the new end). A log thus takes at most about
twice the cap, and the logs folder about 2 x cap x processes.
"""

from __future__ import annotations

import re
from pathlib import Path

LOG_CAP_BYTES = 8 << 20
TAIL_BYTES = 64 << 10
MAX_LINE = 300
# Words that mark the line saying why a process stopped: Python's exception line, Redis's
# "Failed listening on port ... aborting", PostgreSQL's FATAL, etcd's "level":"fatal".
_ERROR = re.compile(r"error|fatal|panic|exception|traceback|failed|refused|denied|"
                    r"cannot|can't|could not|in use|no such|not found|abort|killed",
                    re.IGNORECASE)
# A traceback's frame lines name files and code, not the cause.
_FRAME = re.compile(r'^\s*(File "|\^+$|~+$)|^Traceback \(most recent call last\)')


def last_error_line(text: str) -> str | None:
    """The last line of `text` that says what went wrong, else its last non-empty line,
    shortened to MAX_LINE characters; None for an empty log."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    pick = next((line for line in reversed(lines)
                 if _ERROR.search(line) and not _FRAME.search(line)), lines[-1])
    return pick if len(pick) <= MAX_LINE else pick[:MAX_LINE - 3] + "..."


def tail(path: Path, size: int = TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - size))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def why_it_died(path: Path) -> str:
    """One line for an operator: the log's last error line and where the log is."""
    line = last_error_line(tail(path))
    return f"{line}  (log: {path})" if line else f"(nothing in its log {path})"


def rotate_at_start(logs_dir: Path) -> None:
    """The previous run's logs become `.log.1` (the one before is dropped)."""
    for log in logs_dir.glob("*.log"):
        log.replace(log.with_name(log.name + ".1"))


def cap(logs_dir: Path, limit: int = LOG_CAP_BYTES) -> list[Path]:
    """Rotate in place every log over `limit`: its last `limit` bytes go to `.1`, the log
    is truncated. Returns the logs rotated."""
    rotated = []
    for log in logs_dir.glob("*.log"):
        try:
            if log.stat().st_size <= limit:
                continue
            with open(log, "r+b") as fh:
                fh.seek(-limit, 2)
                kept = fh.read()
                log.with_name(log.name + ".1").write_bytes(kept)
                fh.truncate(0)
        except OSError:
            continue
        rotated.append(log)
    return rotated
