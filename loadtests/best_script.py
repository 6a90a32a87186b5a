#!/usr/bin/env python3
"""Microseconds at the master per BEST call over a sell-out, against HOLD, before/after.

    flock /tmp/heavy.lock .venv/bin/python loadtests/best_script.py [--before REV]

Starts a bare redis-server on a loopback port (the binary the launcher finds), then
for each version of the BEST script (`--before`: the one in git revision REV;
`after`: the one in this tree) sells out a 25 x 40 show laid out as the demo's
(aisles, categories, wheelchair spaces, sweet spot; `best_show` in the tests) with
best-available requests of 1..6 seats (seeded; a refused request asks for one seat
fewer, down to 1, so the show sells out), then holds the same seats again, in the
same order, on a fresh show with HOLD (what a client picking from the map costs).
Time per call is the master's own (SLOWLOG with a 0 µs threshold: the script's
execution, no network, no client), printed as p50 / p99 / mean µs, and the total.
Both versions must choose the same seats, call for call (the rule did not change).
Measured 2026-12-07 on the 2-core dev machine: see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import redis.asyncio as aioredis

from bookcluster.catalog import SeatInfo
from bookcluster.local.binaries import find_redis_server
from bookcluster.ops import demo_catalog
from bookcluster.seats import best, keys, scripts
from bookcluster.seats import layout as seat_layout

ROWS, PER_ROW = 25, 40
NO_DEADLINE = 4_102_444_800_000  # unix ms (2100)


def old_module(rev: str, path: str) -> dict[str, Any]:
    """The module-level names of `path` (a module of ours without imports of the
    package) as of git revision `rev`."""
    text = subprocess.run(["git", "show", f"{rev}:{path}"],
                          capture_output=True, text=True, check=True).stdout
    module = ModuleType(f"old_{rev}_{Path(path).stem}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(text, f"{rev}:{path}", "exec"), module.__dict__)  # noqa: S102 - our own file
    return module.__dict__


def layout(rule: Any = best) -> Any:
    """The demo-like screen's layout, by `rule` (this tree's `best`, or an older one)."""
    seats = demo_catalog._layout(random.Random(0), "bench", 1.0, (ROWS, PER_ROW))
    return rule.layout_of([SeatInfo(s.seat_id, s.row_label, s.number, s.category,
                                    s.price_paise, s.blocked, s.position, s.accessible)
                           for s in seats], demo_catalog.sweet_spot(ROWS))


async def master_us(client: aioredis.Redis) -> list[float]:
    """The µs of every script call since the last reset (SLOWLOG, oldest first)."""
    entries = await client.execute_command("SLOWLOG", "GET", "-1")
    out = []
    for entry in reversed(entries):
        command = entry[3] if isinstance(entry, list | tuple) else entry["command"]
        duration = entry[2] if isinstance(entry, list | tuple) else entry["duration"]
        name = (command[0] if isinstance(command, list | tuple) else command.split()[0])
        if str(name if isinstance(name, str) else name.decode()).lower() in ("evalsha",
                                                                             "eval"):
            out.append(float(duration))
    await client.execute_command("SLOWLOG", "RESET")
    return out


def summary(us: list[float]) -> dict[str, float]:
    ordered = sorted(us)
    return {"calls": len(us), "p50": ordered[len(us) // 2],
            "p99": ordered[min(len(us) - 1, int(len(us) * 0.99))],
            "mean": round(statistics.fmean(us), 1), "total_ms": round(sum(us) / 1000, 1)}


async def sell_out(client: aioredis.Redis, body: str, show: int, fields: dict[str, str],
                   with_deadline: bool, seed: int) -> tuple[list[list[str]], list[float]]:
    """Best-available requests until the show is sold out: the seats of each hold."""
    await seat_layout.write(client, [show], fields)
    script = client.register_script(body)
    show_keys = [*keys.show_keys(show), keys.show_layout(show)]
    rng = random.Random(seed)
    chosen: list[list[str]] = []
    await client.execute_command("SLOWLOG", "RESET")
    n, count = 0, rng.randint(1, 6)
    while count >= 1:
        n += 1
        head = [keys.SEAT_CHANGES_CHANNEL, show, f"b{show}-{n:08d}", 600_000, 1]
        if with_deadline:
            head.append(NO_DEADLINE)
        result = await script(keys=show_keys, args=[*head, count, "", 0, 0])
        if int(result[0]) == 1:
            chosen.append(sorted(str(s) for s in result[3:]))
            count = rng.randint(1, 6)
        else:
            assert int(result[0]) == 0, result
            count -= 1
    return chosen, await master_us(client)


async def picked(client: aioredis.Redis, body: str, show: int, blocks: list[list[str]],
                 with_deadline: bool) -> list[float]:
    script = client.register_script(body)
    await client.execute_command("SLOWLOG", "RESET")
    for n, seats in enumerate(blocks):
        head = [keys.SEAT_CHANGES_CHANNEL, show, f"b{show}-{n:08d}", 600_000, 1]
        if with_deadline:
            head.append(NO_DEADLINE)
        result = await script(keys=keys.show_keys(show), args=[*head, *seats])
        assert int(result[0]) == 1, result
    return await master_us(client)


async def run(port: int, password: str, before: str, rounds: int,
              tries: dict[str, str]) -> dict[str, Any]:
    client = aioredis.Redis(host="127.0.0.1", port=port, password=password)
    for _ in range(100):
        try:
            await client.ping()
            break
        except aioredis.ConnectionError:
            await asyncio.sleep(0.05)
    await client.config_set("slowlog-log-slower-than", 0)
    await client.config_set("slowlog-max-len", 100_000)
    fields = layout().encode()
    old = old_module(before, "bookcluster/seats/scripts.py")
    old_fields = layout(SimpleNamespace(**old_module(before, "bookcluster/seats/best.py")))
    versions = {f"before ({before})": (old["BEST"], old["HOLD"], False,
                                       old_fields.encode()),
                "after": (scripts.BEST, scripts.HOLD, True, fields)}
    for path, body in tries.items():
        versions[f"try {path}"] = (body, scripts.HOLD, True, fields)
    out: dict[str, Any] = {"seats": ROWS * PER_ROW, "rounds": rounds}
    choices: dict[str, list[list[list[str]]]] = {}
    try:
        show = 900_000
        for name, (best_body, hold_body, deadline, encoded) in versions.items():
            best_us: list[float] = []
            hold_us: list[float] = []
            choices[name] = []
            for r in range(rounds):
                show += 2
                chosen, us = await sell_out(client, best_body, show, encoded, deadline,
                                            seed=r)
                choices[name].append(chosen)
                best_us += us
                hold_us += await picked(client, hold_body, show + 1, chosen, deadline)
            out[name] = {"BEST": summary(best_us), "HOLD": summary(hold_us),
                         "holds_per_sellout": round(statistics.fmean(
                             len(c) for c in choices[name]), 1)}
        first, *others = choices.values()
        out["same_choices"] = all(o == first for o in others)
    finally:
        await client.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=46395)
    parser.add_argument("--before", default="ce14ebb",
                        help="git revision whose BEST/HOLD are 'before' (default: main "
                             "when best-available was merged)")
    parser.add_argument("--rounds", type=int, default=3, help="sell-outs per version")
    parser.add_argument("--try", dest="tries", action="append", default=[], metavar="FILE",
                        help="also time this BEST body (Lua; this tree's ARGV), e.g. a "
                             "variant under study")
    args = parser.parse_args()
    binary, _ = find_redis_server()
    password = secrets.token_hex(8)
    with tempfile.TemporaryDirectory() as work:
        proc = subprocess.Popen(
            [str(binary), "--port", str(args.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", work, "--requirepass", password],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            started = time.monotonic()
            result = asyncio.run(run(args.port, password, args.before, args.rounds,
                                 {path: Path(path).read_text() for path in args.tries}))
            result["wall_s"] = round(time.monotonic() - started, 1)
        finally:
            proc.terminate()
            proc.wait(10)
    print(json.dumps(result, indent=2))
    Path(tempfile.gettempdir(), "best_script.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
