"""Holds/s and PostgreSQL CPU per hold on a local cluster, for a before/after of the
hold path's PostgreSQL work (generic plans, batched records).

    flock /tmp/heavy.lock timeout 900 env PYTHONPATH=<tree> python loadtests/hold_rate.py \
        [--clients 32] [--nodes 2]

Starts the test topology (3 regions, `--nodes` nodes each, workers, no WAN delay, not
durable) from the tree on PYTHONPATH, then `--clients` clients hold 2 seats at a time,
each on seats of its own (so every hold is recorded: no conflict, a fresh user each),
sent to the show's home-region nodes, until the seats run out or `--duration` ends.
Counts holds/s (201s), and the CPU (utime+stime, /proc) of every PostgreSQL primary's
process tree (postmaster, its backends, and what exited meanwhile) per hold.

2026-12-07, 32 clients, 2 nodes/region, two runs each, alternating, one lock hold:
  main (85c2a01):  189 / 159 holds/s; PostgreSQL 1.46 / 1.80 ms per hold; but
                   1,792 / 1,627 of its answers were 500 (not investigated)
  pgbatch:         328 / 377 holds/s; PostgreSQL 1.83 / 1.63 ms per hold; no 500
The per-hold PostgreSQL figure includes the workers' background statements (the
reconciler re-reads every non-available seat of each show changed in the last 5 s,
once a second: twice the seats held, twice that work), so it does not isolate the
hold statement; loadtests/pg_hold_cost.py does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from datetime import date
from pathlib import Path

import aiohttp

from bookcluster.local.launcher import LocalCluster
from bookcluster.ops.demo_catalog import build_catalog
from bookcluster.topology.load import load_topology
from bookcluster.topology.placement import Placement
from tests.integration.conftest import TEST_CATALOG, TEST_LIMITS, _theatre_map
from tests.integration.support import call, topology_yaml, use_topology

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def primaries(run_dir: Path) -> list[int]:
    """PIDs of the postmasters whose data directory is under run_dir and that run as a
    primary (not in recovery: no `standby.signal`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"-D" in argv:
            data = Path(argv[argv.index(b"-D") + 1].decode())
            if str(data).startswith(str(run_dir)) and not (data / "standby.signal").exists():
                found.append(int(entry.name))
    return found


def tree_cpu_s(roots: list[int]) -> float:
    """utime+stime of each root, its reaped children, and its live children."""
    total = 0
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
            except OSError:
                continue
    for root in roots:
        fields = _stat(root)
        total += sum(int(f) for f in fields[11:15])
        for child in children.get(root, []):
            try:
                total += sum(int(f) for f in _stat(child)[11:13])
            except OSError:
                continue
    return total / TICK


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--duration", type=float, default=15.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bookcluster-holdrate-") as tmp:
        run = Path(tmp)
        run.chmod(0o755)  # noqa: ASYNC240 - once, before anything runs
        path = run / "topology.yaml"
        path.write_text(topology_yaml(run / "run", nodes=args.nodes, theatres=_theatre_map(),
                                      workers=True, limits=TEST_LIMITS))
        topology = load_topology(path)
        launcher = LocalCluster(topology, catalog=TEST_CATALOG, progress=lambda _: None)
        await launcher.start()
        use_topology(topology)
        try:
            await load(run, topology, args)
        finally:
            launcher.stop()


async def load(run: Path, topology, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    catalog = build_catalog(TEST_CATALOG, date.today())
    placement = Placement(topology)
    theatre_of_screen = catalog.theatre_of_screen()
    seats_of_screen: dict[str, list[str]] = {}
    for seat in catalog.seats:
        if not seat.blocked:
            seats_of_screen.setdefault(seat.screen_id, []).append(seat.seat_id)
    pairs = []
    for show in catalog.shows:
        region = placement.region_of(theatre_of_screen[show.screen_id])
        nodes = [f"http://{ep.host}:{ep.port}" for ep in topology.region(region).nodes]
        seats = seats_of_screen[show.screen_id]
        pairs += [(nodes, show.id, seats[i:i + 2]) for i in range(0, len(seats) - 1, 2)]
    random.Random(1).shuffle(pairs)
    shares = [pairs[i::args.clients] for i in range(args.clients)]
    roots = primaries(run)
    statuses: dict[int, int] = {}
    stop_at = time.monotonic() + args.duration

    async def client(n: int, http: aiohttp.ClientSession) -> None:
        for k, (nodes, show, seats) in enumerate(shares[n]):
            if time.monotonic() > stop_at:
                return
            url = f"{nodes[k % len(nodes)]}/booking/seats/{show}/lock"
            status, _ = await call(http, "POST", url,
                                   json={"user_id": f"rate-{n}-{k}", "seat_ids": seats})
            statuses[status] = statuses.get(status, 0) + 1

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=0)) as http:
        await asyncio.sleep(3)  # let start-up work settle
        cpu0, t0 = tree_cpu_s(roots), time.monotonic()
        await asyncio.gather(*(client(n, http) for n in range(args.clients)))
        cpu1, t1 = tree_cpu_s(roots), time.monotonic()
    held = statuses.get(201, 0)
    print(f"primaries {roots}; {args.clients} clients, {args.nodes} nodes/region: "
          f"statuses {statuses}; {held / (t1 - t0):.0f} holds/s over {t1 - t0:.1f} s; "
          f"PostgreSQL primaries' CPU {(cpu1 - cpu0) / max(held, 1) * 1000:.3f} ms per hold")


if __name__ == "__main__":
    asyncio.run(main())
