"""The rush on one show: best-available seats vs clients picking from the seat map.

Two fresh 1,000-seat shows of one home region, one rush each, one after the other in
the same run and cluster: `--best-clients` clients (500), each serving one person
after another (a fresh user each, wanting 1-6 seats), until PostgreSQL has no free
seat of the show left (polled every 0.25 s; the load generators then stop),
`--best-duration` seconds (60) passed or `--best-max-requests` holds (20,000) were
sent.

- *best*: a person asks the home region for the best block of the seats they want
  (`POST /booking/seats/{show}/best`); refused (409 `no_block_available`) they take
  seats apart (`allow_split`), then one seat fewer each time.
- *pick*: today's users (the locust scenario's `picking.choose_seats`): read the seat
  map at a node of their own region, pick side by side when a run fits, half of those
  on the first few free runs (the favourite seats everyone eyes), hold; on a 409 read
  the map again and pick again, up to `PICK_TRIES` holds a person.

In both, a hold refused with 429 or 503 is sent again under the same Idempotency-Key,
as the booking page does (a 503 `unknown` may have held seats: the retry gets them).
A client to whom the show looks sold out (one seat apart refused; a map with no free
seat) looks at the seat map every 0.5 s until a seat comes back: a hold whose answer
was lost (503, outcome unknown) may hold seats for a while and then lapse.

Holds go to nodes of the show's home region, as the booking page sends them. For
each rush: the time from the start to the last seat held (and to PostgreSQL's last
free seat going), hold requests by answer and the share refused, seat-map reads, the
CPU of every process group per seat held (`cpu.py`, the work left to the workers
included), and the home master's own time in each Lua script: the master logs every
command's execution time for the rush (`CONFIG SET slowlog-log-slower-than 0`, a
`SLOWLOG_LEN`-entry log, set back afterwards) and the EVALSHA entries are grouped by
script. PostgreSQL is asked afterwards whether any seat is held by two bookings and
how many seats are left.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import pkgutil
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bookcluster import seats
from bookcluster.seats import keys
from bookcluster.stores.connections import PG_TOOL_SESSION, make_redis, pg_dsn, pg_login

from . import log
from .backlog import Settle
from .local import BenchCluster
from .phases import Load, cpu_ms_per_op, measured
from .stats import summarize

CLIENTS = 500
DURATION_S = 60.0
MAX_REQUESTS = 20_000  # hold requests per rush at most
SOLD_OUT_POLL_S = 0.25  # how often PostgreSQL is asked whether the show sold out
SEATS = (1, 6)
PICK_TRIES = 20
SLOWLOG_LEN = 200_000  # entries kept on the master during a rush (~150 bytes each)
HOME = "north"
ROUTES = {"best": ("/booking/seats/{show_id}/best", "POST"),
          "pick": ("/booking/seats/{show_id}/lock", "POST")}


def script_names() -> dict[str, str]:
    """sha1 -> name of every Lua script a module of `bookcluster.seats` defines (an
    upper-case string constant that calls Redis)."""
    out: dict[str, str] = {}
    for info in pkgutil.iter_modules(seats.__path__):
        module = importlib.import_module(f"{seats.__name__}.{info.name}")
        for name, text in vars(module).items():
            if name.isupper() and not name.startswith("_") and isinstance(text, str) \
                    and "redis.call" in text:
                out.setdefault(hashlib.sha1(text.encode()).hexdigest(), name)
    return out


class ScriptClock:
    """The home master's execution time of every EVALSHA while a rush runs: an async
    context manager that turns on the slow log for every command and sets it back."""

    def __init__(self, cluster: BenchCluster, region: str) -> None:
        self.redis = make_redis(cluster.topology.region(region).redis_master,
                                cluster.topology.secrets, timeout_s=30.0)
        self.saved: dict[str, str] = {}
        self.entries: list[dict[str, Any]] = []

    async def __aenter__(self) -> ScriptClock:
        for name in ("slowlog-log-slower-than", "slowlog-max-len"):
            got = await self.redis.config_get(name)
            self.saved.update({_text(k): _text(v) for k, v in got.items()})
        await self.redis.config_set("slowlog-max-len", SLOWLOG_LEN)
        await self.redis.config_set("slowlog-log-slower-than", 0)
        await self.redis.slowlog_reset()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            self.entries = list(await self.redis.slowlog_get(SLOWLOG_LEN))
            for name, value in self.saved.items():
                await self.redis.config_set(name, value)
            await self.redis.slowlog_reset()
        finally:
            await self.redis.aclose()

    def summary(self) -> dict[str, Any]:
        """Per script (by name, else the sha's start): count and p50/p99/max in µs."""
        names = script_names()
        times: dict[str, list[float]] = {}
        for entry in self.entries:
            command = entry["command"]
            words = (command.decode(errors="replace") if isinstance(command, bytes)
                     else str(command)).split()
            if len(words) >= 2 and words[0].upper() == "EVALSHA":
                name = names.get(words[1].lower(), words[1][:12])
                times.setdefault(name, []).append(float(entry["duration"]))
        out: dict[str, Any] = {"entries": len(self.entries),
                               "full": len(self.entries) >= SLOWLOG_LEN, "scripts": {}}
        if times:
            times["all scripts"] = [v for values in times.values() for v in values]
        for name, values in sorted(times.items(), key=lambda kv: -len(kv[1])):
            s = summarize(values)
            out["scripts"][name] = {"count": s["count"], "p50_us": s["p50_ms"],
                                    "p99_us": s["p99_ms"], "max_us": s["max_ms"],
                                    "total_ms": round(sum(values) / 1000, 3)}
        return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _connect(cluster: BenchCluster, show: int) -> asyncpg.Connection:
    region = cluster.home_of(show)
    return await asyncpg.connect(pg_dsn(cluster.topology.region(region).pg_primary),
                                 **pg_login(cluster.topology.secrets),
                                 server_settings=PG_TOOL_SESSION)


async def watch_sell_out(cluster: BenchCluster, show: int, stop: Path,
                         over: asyncio.Event) -> float | None:
    """Until `over`: when PostgreSQL has no free seat of the show left, touch `stop` (the
    load generators end the rush) and return the wall-clock time it was seen."""
    conn = await _connect(cluster, show)
    try:
        while not over.is_set():
            left = await conn.fetchval("SELECT count(*) FROM show_seat WHERE show_id = $1 "
                                       "AND status = 'AVAILABLE'", show)
            if left == 0:
                await asyncio.to_thread(stop.touch)
                return time.time()
            try:
                await asyncio.wait_for(over.wait(), SOLD_OUT_POLL_S)
            except TimeoutError:
                pass
        return None
    finally:
        await conn.close()


async def stranded(cluster: BenchCluster, show: int) -> int:
    """Seats the home master holds now for a booking PostgreSQL does not hold them for
    (a hold whose request gave up before its script ran, or whose record failed): held
    there until the hold's TTL, free in PostgreSQL."""
    redis = make_redis(cluster.topology.region(cluster.home_of(show)).redis_master,
                       cluster.topology.secrets, timeout_s=30.0)
    try:
        holds = await redis.hgetall(keys.show_holds(show))
    finally:
        await redis.aclose()
    now_ms = time.time() * 1000
    live = {}
    for seat, value in holds.items():
        booking, _, expires = _text(value).partition("|")
        if float(expires or 0) > now_ms:
            live[_text(seat)] = booking
    conn = await _connect(cluster, show)
    try:
        rows = await conn.fetch(
            "SELECT bs.booking_id, bs.seat_id FROM booking_seat bs JOIN booking b ON b.id = "
            "bs.booking_id WHERE b.show_id = $1 AND b.status IN ('INITIATED', 'CONFIRMED')",
            show)
    finally:
        await conn.close()
    recorded = {(r["booking_id"], r["seat_id"]) for r in rows}
    return sum(1 for seat, booking in live.items() if (booking, seat) not in recorded)


async def seats_in_postgres(cluster: BenchCluster, show: int) -> dict[str, int]:
    """Seats left, seats held or sold, and seats held by two live bookings at once."""
    conn = await _connect(cluster, show)
    try:
        left = await conn.fetchval("SELECT count(*) FROM show_seat WHERE show_id = $1 "
                                   "AND status = 'AVAILABLE'", show)
        taken = await conn.fetchval("SELECT count(*) FROM show_seat WHERE show_id = $1 "
                                    "AND status IN ('LOCKED', 'BOOKED')", show)
        twice = await conn.fetchval(
            "SELECT count(*) FROM (SELECT bs.seat_id FROM booking_seat bs JOIN booking b ON "
            "b.id = bs.booking_id WHERE b.show_id = $1 AND b.status IN ('INITIATED', "
            "'CONFIRMED') GROUP BY bs.seat_id HAVING count(*) > 1) t", show)
        return {"seats_left": int(left), "seats_taken": int(taken),
                "seats_held_twice": int(twice)}
    finally:
        await conn.close()


def _specs(cluster: BenchCluster, load: Load, kind: str, show: int, clients: int,
           duration_s: float, max_requests: int) -> list[dict[str, Any]]:
    home = cluster.home_of(show)
    regions = list(cluster.topology.regions)
    per = [clients // load.procs + (1 if i < clients % load.procs else 0)
           for i in range(load.procs)]
    caps = [max_requests // load.procs + (1 if i < max_requests % load.procs else 0)
            for i in range(load.procs)]
    return [{"kind": kind, "concurrency": n, "duration_s": duration_s, "max_requests": cap,
             "seed": 100 + i, "show": show, "seats": list(SEATS), "tries": PICK_TRIES,
             "home_nodes": cluster.nodes(home)[i:] + cluster.nodes(home)[:i],
             "read_nodes": [cluster.nodes(r) for r in regions],
             "user": f"rush-{kind}{i}", "topology": str(cluster.topology.path),
             "warm_urls": [f"{node}/healthz" for node in cluster.nodes()]}
            for i, (n, cap) in enumerate(zip(per, caps, strict=True)) if n]


def digest(kind: str, result: dict[str, Any], show_seats: int) -> dict[str, Any]:
    """What one rush shows: sell-out time, answers, refusals, people, reads."""
    events = result["results"]
    holds = [e for e in events if e["kind"] != "read"]
    reads = [e for e in events if e["kind"] == "read"]
    made = [e for e in holds if e["status"] == 201]
    held = sum(e["seats"] for e in made)
    start = result["started"]
    answers = Counter(f"{e['status']} {e['error']}" if e["error"] else str(e["status"])
                      for e in holds)
    refused = sum(n for k, n in answers.items() if not k.startswith("201"))
    return {"kind": kind, "show_seats": show_seats, "hold_requests": len(holds),
            "holds_made": len(made), "seats_held": held,
            "sold_out": held >= show_seats,
            # start to the answer of the last hold made
            "sell_out_s": round(max(e["done"] for e in made) - start, 3) if made else None,
            "answers_503": sum(1 for e in holds if e["status"] == 503),
            "elapsed_s": round(result["elapsed_s"], 3),
            "refused": refused,
            "refused_share": round(refused / len(holds), 3) if holds else None,
            "answers": dict(answers.most_common()),
            "seats_per_hold": round(held / len(made), 2) if made else None,
            "hold_latency": summarize(result["latencies"]),
            "map_reads": len(reads),
            "map_read_p99_ms": summarize([e["ms"] for e in reads])["p99_ms"] if reads else None}


async def one_rush(cluster: BenchCluster, http: aiohttp.ClientSession, load: Load, kind: str,
                   show: int, clients: int, duration_s: float, max_requests: int,
                   settle: Settle | None) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bookcluster-rush-"))
    stop = folder / "sold-out"
    specs = [{**spec, "stop_file": str(stop)}
             for spec in _specs(cluster, load, kind, show, clients, duration_s, max_requests)]
    over = asyncio.Event()
    watcher = asyncio.create_task(watch_sell_out(cluster, show, stop, over))
    try:
        async with ScriptClock(cluster, cluster.home_of(show)) as clock:
            result = await measured(cluster, http, specs, ROUTES[kind], duration_s * 2 + 120,
                                    settle=settle)
    finally:
        over.set()
        sold_at = await watcher
        shutil.rmtree(folder, ignore_errors=True)
    out = digest(kind, result, len(cluster.seats_of(show)))
    out["postgres_sold_out_s"] = round(sold_at - result["started"], 3) if sold_at else None
    out.update(await seats_in_postgres(cluster, show))
    out["held_on_master_only"] = await stranded(cluster, show)
    out["show_id"] = show
    out["clients"] = clients
    out["cpu"] = result["cpu"]
    out["after_load"] = result.get("after_load")
    out["cpu_ms_per_seat"] = cpu_ms_per_op(result, out["seats_held"])
    out["server_mean_ms"] = result.get("server_mean_ms")
    out["master_scripts"] = clock.summary()
    return out


async def rush_phases(cluster: BenchCluster, http: aiohttp.ClientSession, load: Load,
                      shows: list[int], settle: Settle | None, clients: int,
                      duration_s: float, max_requests: int = MAX_REQUESTS) -> dict[str, Any]:
    """Both rushes, best available first, each on a show of its own."""
    if settle is not None and not settle.idle:
        await settle.idle_rates(2.0)
    out: dict[str, Any] = {"clients": clients, "duration_s": duration_s,
                           "max_requests": max_requests, "seats": list(SEATS),
                           "pick_tries": PICK_TRIES, "home": cluster.home_of(shows[0])}
    for kind, show in zip(("best", "pick"), shows, strict=True):
        log(f"R  rush, {kind}: {clients} clients on show {show} "
            f"({len(cluster.seats_of(show))} seats), {SEATS[0]}-{SEATS[1]} seats a person")
        out[kind] = await one_rush(cluster, http, load, kind, show, clients, duration_s,
                                   max_requests, settle)
        log("   " + line(out[kind]))
    return out


def line(r: dict[str, Any]) -> str:
    per = r["cpu_ms_per_seat"].get("cluster", "-")
    scripts_ = r["master_scripts"]["scripts"]
    top = next(((k, v) for k, v in scripts_.items() if k != "all scripts"), None)
    return (f"{r['seats_held']}/{r['show_seats']} seats held in "
            f"{r['sell_out_s']} s; {r['hold_requests']:,} holds, "
            f"{(r['refused_share'] or 0) * 100:.1f}% refused; cluster CPU {per} ms per seat; "
            + (f"master script {top[0]} p99 {top[1]['p99_us']} µs" if top else "no script"))
