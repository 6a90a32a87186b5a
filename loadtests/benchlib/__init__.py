"""The parts of `loadtests/bench.py`: local servers, load generators, phases, raw limits, report."""
