"""Files the jobs deliver (mails): written whole, then renamed into place.

Written on the event loop, not in a thread: measured with
`loadtests/worker_drain.py` at 60 confirms/s, `asyncio.to_thread` cost more than
the writes (5.8 -> 6.7 ms of worker CPU per confirm; the queue drained 35 jobs/s
of each kind instead of 59), the thread hand-off and the GIL passing back and
forth outweighing two small files.
"""

from __future__ import annotations

import os
from pathlib import Path


def deliver(data: bytes, final: Path, tmp_dir: Path | None = None) -> None:
    """Put `data` at `final` atomically: a reader sees the old file or the whole new
    one. `tmp_dir` must be on the same file system (default: `final`'s folder)."""
    tmp_dir = tmp_dir or final.parent
    tmp_dir.mkdir(parents=True, exist_ok=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"{final.name}.{os.getpid()}.tmp"  # no await here: no other job interleaves
    tmp.write_bytes(data)
    tmp.replace(final)
