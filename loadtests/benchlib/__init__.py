"""The parts of `loadtests/bench.py`: local servers, load generators, phases, raw limits, report."""

import time


def log(message: str) -> None:
    """A progress line with the wall time, flushed at once (the output may be piped)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
