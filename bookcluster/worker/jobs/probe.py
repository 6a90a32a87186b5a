"""A diagnostic job: records each run under `probe/` in the run folder, then sleeps.

Operators use it to see that a region's workers take jobs; tests use it to
kill a worker in the middle of a job and watch another worker run it again.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

from bookcluster.worker.jobs.context import JobContext

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _append(path: Path, line: str) -> None:
    with path.open("a") as fh:
        fh.write(line)


async def run(ctx: JobContext, data: dict[str, Any]) -> str:
    name = str(data.get("name", "probe"))
    if not NAME.match(name):
        raise ValueError(f"bad probe name {name!r}")
    folder = ctx.run_dir / "probe" / ctx.region
    folder.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(_append, folder / f"{name}.runs", f"{os.getpid()} {time.time():.3f}\n")
    if (folder / f"{name}.fail").exists():  # an operator's switch to exercise retries
        raise RuntimeError(f"probe {name} asked to fail")
    await asyncio.sleep(float(data.get("sleep_s", 0)))
    (folder / f"{name}.done").write_text(str(os.getpid()))
    return name
