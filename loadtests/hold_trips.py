#!/usr/bin/env python3
"""CPU per hold of the hold's Redis work: client (this process) and servers (/proc).

    flock /tmp/heavy.lock .venv/bin/python loadtests/hold_trips.py [--holds 4000]

Starts a Redis master with three replicas (a region's master is replicated to a
replica in every region) on loopback, then runs batches of holds of two seats
through the node's own client (`make_redis`: redis-py, its pool, the outage
connection class), `--concurrency` at a time, each path in turn, same servers,
same run:
- `two`: the rate-limit pipeline (two TOKEN_BUCKET EVALSHAs, `limits.check_write`'s
  call) and then HOLD, two round trips, as every hold did before;
- `one`: HOLD_LIMITED, the limits and the hold in one script, one round trip;
- `one-pipelined`: HOLD_LIMITED of every hold that is at that step in one event-loop
  turn, sent as one pipeline (what a per-region coalescer would do at best).
Prints microseconds of CPU per hold: client (process time), master and the three
replicas (utime+stime from /proc), best and median of `--rounds` batches per path.
Measured 2026-12-07 on the 2-core dev machine (busy with other work: compare within
the run), 4000 holds x 5 rounds, 16 at a time, best / median us per hold:
  two            client 308 / 326   master 110 / 153   replicas 70 / 105
  one            client 157 / 173   master  73 /  88   replicas 58 /  68
  one-pipelined  client  67 /  69   master  58 /  58   replicas 45 /  45
(`one-pipelined` is a best case: 16 holds always meet in one loop turn here.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bookcluster.booking.limits import _take_tokens
from bookcluster.local.binaries import find_redis_server
from bookcluster.seats import keys
from bookcluster.seats.scripts import HOLD_LIMITED, TOKEN_BUCKET, SeatScripts
from bookcluster.stores.connections import make_redis
from bookcluster.topology.model import Endpoint, Rate
from bookcluster.topology.secrets import Secrets

TICK_S = 1 / os.sysconf("SC_CLK_TCK")
RATE = Rate(per_s=100000, burst=100000)  # never refuses: the cost of granting is measured
NO_DEADLINE = 4_102_444_800_000  # unix ms (2100): the scripts' deadline never passes here
SEATS = [f"{row}{n}" for row in "ABCDEFGHIJKLMNOPQRST" for n in range(1, 51)]  # 1,000


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def start(binary: Path, port: int, password: str, work: Path,
          master: int | None = None) -> subprocess.Popen[bytes]:
    argv = [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(work), "--requirepass", password,
            "--masterauth", password]
    if master is not None:
        argv += ["--replicaof", "127.0.0.1", str(master)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Holds:
    """Hold requests of two seats each, on fresh shows, for fresh bookings."""

    def __init__(self) -> None:
        self.show = 500_000
        self.n = 0

    def next(self) -> tuple[int, str, list[str], str, str]:
        if self.n % (len(SEATS) // 2) == 0:
            self.show += 1
        i = self.n % (len(SEATS) // 2)
        self.n += 1
        return (self.show, f"b{self.show}-{self.n:016x}", SEATS[2 * i:2 * i + 2],
                f"user-{self.n % 5000}", f"10.0.{self.n % 200}.1")


async def hold_two(client: aioredis.Redis, scripts: SeatScripts, req: tuple[Any, ...]) -> None:
    show, booking, seats, user, address = req
    buckets = (("user_writes", keys.rate_bucket("user", user), RATE),
               ("ip_writes", keys.rate_bucket("ip", address), RATE))
    granted = await _take_tokens(client, buckets)
    assert all(int(a) for a, _ in granted)
    result = await scripts.run(client, "hold", keys.show_keys(show),
                               [keys.SEAT_CHANGES_CHANNEL, show, booking, 60000, 1,
                                NO_DEADLINE, *seats])
    assert int(result[0]) == 1, result


def limited_args(req: tuple[Any, ...]) -> tuple[list[str], list[Any]]:
    show, booking, seats, user, address = req
    return ([*keys.show_keys(show), keys.rate_bucket("user", user),
             keys.rate_bucket("ip", address)],
            [keys.SEAT_CHANGES_CHANNEL, show, booking, 60000, 1, NO_DEADLINE, *seats,
             RATE.per_s, RATE.burst, RATE.per_s, RATE.burst])


async def hold_one(client: aioredis.Redis, scripts: SeatScripts, req: tuple[Any, ...]) -> None:
    result = await scripts.run(client, "hold_limited", *limited_args(req))
    assert int(result[0]) == 1, result


class Coalescer:
    """HOLD_LIMITED calls of one event-loop turn in one pipeline (prototype)."""

    def __init__(self, client: aioredis.Redis, sha: str) -> None:
        self.client, self.sha = client, sha
        self.pending: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []

    async def run(self, keys_: list[str], args: list[Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self.pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self.pending.append((keys_, args, future))
        return await future

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        task = asyncio.ensure_future(self._send(batch))
        task.add_done_callback(lambda t: t.exception())

    async def _send(self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]) -> None:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for keys_, args, _ in batch:
                    pipe.evalsha(self.sha, len(keys_), *keys_, *args)
                results = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            for _, _, future in batch:
                future.set_exception(exc)
            return
        for (_, _, future), result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


async def batch(path: str, client: aioredis.Redis, scripts: SeatScripts, coalescer: Coalescer,
                holds: Holds, count: int, concurrency: int) -> int:
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            req = holds.next()
            if path == "two":
                await hold_two(client, scripts, req)
            elif path == "one":
                await hold_one(client, scripts, req)
            else:
                result = await coalescer.run(*limited_args(req))
                assert int(result[0]) == 1, result

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    binary, _ = find_redis_server()
    password = secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as tmp:
        ports = [int(p) for p in args.ports.split(",")]
        dirs = [Path(tmp) / f"redis{i}" for i in range(len(ports))]
        for d in dirs:
            d.mkdir()
        procs = [start(binary, ports[0], password, dirs[0], None)]
        procs += [start(binary, port, password, d, ports[0])
                  for port, d in zip(ports[1:], dirs[1:], strict=True)]
        try:
            env = {"BOOKCLUSTER_REDIS_PASSWORD": password}
            client = make_redis(Endpoint("127.0.0.1", ports[0]), Secrets(Path(tmp), env))
            for _ in range(100):
                try:
                    await client.ping()
                    break
                except Exception:
                    await asyncio.sleep(0.05)
            scripts = SeatScripts()
            sha = await client.script_load(HOLD_LIMITED)
            await client.script_load(TOKEN_BUCKET)
            coalescer = Coalescer(client, sha)
            holds = Holds()
            paths = ["two", "one", "one-pipelined"]
            for path in paths:  # warm: scripts loaded, pool filled
                await batch(path, client, scripts, coalescer, holds, 500, args.concurrency)
            figures: dict[str, dict[str, list[float]]] = {
                p: {"client": [], "master": [], "replicas": []} for p in paths}
            for _ in range(args.rounds):
                for path in paths:
                    await asyncio.sleep(0.3)  # replicas catch up outside the batch
                    c0, s0 = time.process_time(), [cpu_s(p.pid) for p in procs]
                    n = await batch(path, client, scripts, coalescer, holds, args.holds,
                                    args.concurrency)
                    await asyncio.sleep(0.3)
                    c1, s1 = time.process_time(), [cpu_s(p.pid) for p in procs]
                    figures[path]["client"].append((c1 - c0) / n * 1e6)
                    figures[path]["master"].append((s1[0] - s0[0]) / n * 1e6)
                    figures[path]["replicas"].append(
                        sum(b - a for a, b in zip(s0[1:], s1[1:], strict=True)) / n * 1e6)
            await client.aclose()
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(10)
    return {path: {who: {"best": round(min(v), 1), "median": round(statistics.median(v), 1)}
                   for who, v in per.items()} for path, per in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--holds", type=int, default=4000, help="holds per batch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--ports", default="46379,46380,46381,46382",
                        help="master, then replicas")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(measure(args))
    if args.json:
        print(json.dumps(result))
        return
    print(f"us of CPU per hold ({args.holds} holds x {args.rounds} rounds, "
          f"{args.concurrency} at a time): best / median")
    for path, per in result.items():
        print(f"  {path:14s} " + "  ".join(
            f"{who} {v['best']:6.1f} / {v['median']:6.1f}" for who, v in per.items()))


if __name__ == "__main__":
    main()
