"""The raw limits of this machine for the two stages of a hold, and for a confirm.

A fresh redis-server and a scratch PostgreSQL, started from the same binaries and
with the same settings as the cluster's (`durable` included, and passwords: the
secrets are generated in the scratch run folder as `bookcluster up` does),
through the launcher's own helpers and stopped by PID:

- `redis-benchmark -a <password>` runs the HOLD script (EVALSHA, 2 and 3 random
  seats of one show, so holds succeed) as fast as this machine allows;
- `pgbench -U bookcluster` (the application role, PGPASSWORD in its environment)
  runs the hold's PostgreSQL write (`bc_record_hold`, 1-4 seats, caps checked,
  a fresh user per hold as in the bench) and the confirm transaction as
  `bookcluster/booking/confirm.py` sends it, minus its call to the gateway;
- the same two stages are also timed from Python (redis-py, asyncpg: the nodes'
  drivers) at the hold phase's concurrency, to see where a hold's time goes.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import random
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from bookcluster.db.create import create_database
from bookcluster.db.migrate import migrate
from bookcluster.local import postgres_server, redis_server
from bookcluster.local.binaries import Binaries, find_binaries
from bookcluster.local.ports import free_ports
from bookcluster.seats import keys
from bookcluster.seats.scripts import HOLD
from bookcluster.stores.connections import (
    PG_DATABASE,
    PG_TOOL_SESSION,
    PG_USER,
    make_redis,
    pg_dsn,
    pg_login,
)
from bookcluster.topology.load import load_topology
from bookcluster.topology.model import Endpoint, Limits
from bookcluster.topology.secrets import generate_local

from .cpu import cpu_seconds
from .local import AuxServers
from .stats import summarize

SEATS_PER_SHOW = 400  # seats S0..S399: 100 blocks of 4, one block per hold or booking
BLOCKS = SEATS_PER_SHOW // 4
CAPS = Limits()  # the per-user caps bc_record_hold checks, at their defaults

# A fresh user per hold, as the bench's clients do: the caps are checked, never hit.
PGBENCH_HOLD = """\
\\set k random(1, 4)
SELECT h.token, h.refused, h.limit_hit FROM (SELECT nextval('bench_hold_seq') AS n) q,
  LATERAL bc_record_hold(1 + (q.n - 1) / {blocks},
    ARRAY(SELECT 'S' || (4 * ((q.n - 1) % {blocks}) + g)
          FROM generate_series(0, :k::int - 1) g),
    'bh' || q.n, 'bh-user-' || q.n, now() + interval '10 minutes', interval '30 minutes',
    array_fill(18000, ARRAY[:k::int]), {max_seats}, {max_holds}, NULL, 1) h;
"""

# bookcluster/booking/confirm.py's statement, `bc_confirm`: claim the key for the owner, the
# fenced sale for the captured amount, store the answer (the gateway is asked before:
# not here). The first statement only draws this client's next booking, its owner and
# amount (which the node knows from the token and the gateway).
PGBENCH_CONFIRM = """\
SELECT q.n AS n, b.user_id AS uid, b.amount_paise AS amt
  FROM (SELECT nextval('bench_confirm_seq') AS n) q
  LEFT JOIN booking b ON b.id = 'cb' || q.n \\gset
\\if :n <= :cap
\\set show :cbase + (:n - 1) / {blocks}
SELECT outcome FROM bc_confirm(:show, 'cb' || :n, :uid, 'key-' || :n, 'hash',
  'pay-' || :n, :amt, 'bench', now() + interval '1 minute', 1);
\\endif
"""


STAGE_PG_HOLD = f"""
SELECT h.token, h.refused, h.limit_hit FROM (SELECT nextval('bench_hold_seq') AS n) q,
  LATERAL bc_record_hold(1 + (q.n - 1) / {BLOCKS},
    ARRAY(SELECT 'S' || (4 * ((q.n - 1) % {BLOCKS}) + g) FROM generate_series(0, $1 - 1) g),
    'bs' || q.n, 'bs-user-' || q.n, now() + interval '10 minutes', interval '30 minutes',
    array_fill(18000, ARRAY[$1::int]), {CAPS.seats_per_show}, {CAPS.holds_per_user}, NULL, 1) h
"""


def find_redis_benchmark() -> Path | None:
    found = shutil.which("redis-benchmark")
    return Path(found) if found else None


def find_pgbench(binaries: Binaries) -> Path | None:
    beside = Path(binaries.pg("pgbench"))
    if beside.is_file():
        return beside
    found = shutil.which("pgbench")
    return Path(found) if found else None


async def _run(argv: list[str], timeout_s: float, cwd: Path | None = None,
               env: dict[str, str] | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL, cwd=cwd,
        env={**os.environ, **env} if env else None)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} failed (exit {proc.returncode}): {text[-1500:]}")
    return text


async def version_of(binary: Path) -> str:
    try:
        return (await _run([str(binary), "--version"], 10)).strip()
    except (OSError, RuntimeError) as exc:
        return f"unknown ({exc})"


class ScratchServers:
    """A fresh redis-server and a PostgreSQL with the schema and seeded rows."""

    def __init__(self, folder: Path, durable: bool) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.durable = durable
        self.binaries = find_binaries()
        generate_local(folder / "run")  # store passwords, as `bookcluster up` makes them
        ports = free_ports(4)
        topo = folder / "topology.yaml"
        topo.write_text(
            f"settings:\n  run_dir: {folder / 'run'}\n  durable: {str(durable).lower()}\n"
            f"regions:\n  scratch:\n    redis:\n      master: 127.0.0.1:{ports[0]}\n"
            f"      replicas:\n        scratch: 127.0.0.1:{ports[1]}\n"
            f"    postgres:\n      primary: 127.0.0.1:{ports[2]}\n"
            f"    nodes: [127.0.0.1:{ports[3]}]\n")
        self.topology = load_topology(topo)
        self.secrets = self.topology.secrets
        self.aux = AuxServers(folder / "aux", self.secrets)
        self.region = self.topology.region("scratch")
        self.hold_shows = 0
        self.confirm_bookings = 0

    @property
    def redis(self) -> Endpoint:
        return self.region.redis_master

    @property
    def pg(self) -> Endpoint:
        return self.region.pg_primary

    async def connect(self, *, tool: bool = False) -> asyncpg.Connection:
        """As the nodes log in: the application role `bookcluster`, with its password;
        a `tool` session (migrations, seeding) lifts the role's timeouts."""
        return await asyncpg.connect(pg_dsn(self.pg), **pg_login(self.secrets),
                                     server_settings=PG_TOOL_SESSION if tool else None)

    async def start(self, hold_shows: int, confirm_bookings: int) -> None:
        await self.aux.start(redis_server.master_spec(self.binaries.redis_server,
                                                      self.topology, self.region))
        user = postgres_server.pg_os_user()
        postgres_server.check_reachable(self.topology.settings.run_dir, user)
        await postgres_server.init_primary(
            self.binaries, postgres_server.data_dir(self.topology, self.region, "pg-primary"),
            user, self.secrets)
        spec = postgres_server.primary_spec(self.binaries, self.topology, self.region, user)
        await self.aux.start(spec, probe_address=spec.address.rsplit("/", 1)[0] + "/postgres")
        await create_database([self.pg], self.secrets)
        conn = await self.connect(tool=True)
        try:
            await migrate(conn)
            await self._seed(conn, hold_shows, confirm_bookings)
        finally:
            await conn.close()

    async def _seed(self, conn: asyncpg.Connection, hold_shows: int, bookings: int) -> None:
        """Shows 1..hold_shows for holds, then shows with `bookings` INITIATED bookings."""
        confirm_shows = -(-bookings // BLOCKS)
        self.hold_shows, self.confirm_bookings = hold_shows, bookings
        shows = hold_shows + confirm_shows
        await conn.execute(f"""
            CREATE SEQUENCE bench_hold_seq; CREATE SEQUENCE bench_confirm_seq;
            INSERT INTO city VALUES ('bench', 'Bench', 'Bench');
            INSERT INTO theatre VALUES ('bench-01', 'bench', 'Bench', 'Bench');
            INSERT INTO theatre_owner (theatre_id, state, epoch) VALUES ('bench-01', 'OWNED', 1);
            INSERT INTO screen VALUES ('bench-01-s1', 'bench-01', 'Audi 1');
            INSERT INTO movie VALUES ('bench', 'Bench', 'Hindi', 120, 'U');
            INSERT INTO show SELECT g, 'bench-01-s1', 'bench', now() + interval '1 day'
              FROM generate_series(1, {shows}) g;
            INSERT INTO show_seat (show_id, seat_id, status)
              SELECT s, 'S' || n, 'AVAILABLE'
              FROM generate_series(1, {shows}) s, generate_series(0, {SEATS_PER_SHOW - 1}) n;
            CREATE TEMP TABLE held AS
              SELECT n, {hold_shows} + 1 + (n - 1) / {BLOCKS} AS show_id,
                     (n - 1) % {BLOCKS} AS blk, 1 + (n - 1) % 4 AS k
              FROM generate_series(1, {bookings}) n;
            INSERT INTO booking (id, user_id, show_id, status, fence_token, amount_paise,
                                 expires_at, hold_deadline)
              SELECT 'cb' || n, 'bench-user-' || (n % 1000), show_id, 'INITIATED', n,
                     18000 * k, now() + interval '1 hour', now() + interval '2 hours'
              FROM held;
            INSERT INTO booking_seat (booking_id, show_id, seat_id, price_paise)
              SELECT 'cb' || n, show_id, 'S' || (4 * blk + g), 18000
              FROM held, LATERAL generate_series(0, k - 1) g;
            UPDATE show_seat ss SET status = 'LOCKED', hold_booking_id = bs.booking_id,
                   hold_expires_at = now() + interval '1 hour',
                   fence_token = substr(bs.booking_id, 3)::bigint
              FROM booking_seat bs
              WHERE ss.show_id = bs.show_id AND ss.seat_id = bs.seat_id;
        """)
        # Not inside the implicit transaction above; only our tables (the role owns no others).
        await conn.execute("VACUUM ANALYZE show, show_seat, booking, booking_seat")

    def server_cpu_s(self) -> dict[str, float]:
        """CPU seconds so far of the scratch redis-server and PostgreSQL (all backends)."""
        groups: dict[str, list[int]] = {}
        for child in self.aux.supervisor.children:
            groups.setdefault("redis" if child.spec.role.startswith("redis") else "postgres",
                              []).append(child.pid)
        return cpu_seconds(groups)

    def stop(self) -> None:
        self.aux.stop()


# -- redis-benchmark ---------------------------------------------------------------

async def redis_hold_limit(servers: ScratchServers, requests: int, clients: int,
                           timeout_s: float) -> dict[str, Any]:
    binary = find_redis_benchmark()
    if binary is None:
        return {"skipped": "redis-benchmark not on PATH (Debian: apt-get install -y "
                           "redis-tools)"}
    client = make_redis(servers.redis, servers.secrets, timeout_s=10.0)
    try:
        sha = await client.script_load(HOLD)
    finally:
        await client.aclose()
    show = 1
    runs = []
    for seats in (2, 3):  # holds of 1-4 seats average 2.5
        argv = [str(binary), "-h", servers.redis.host, "-p", str(servers.redis.port),
                "-a", servers.secrets.redis_password, "-n", str(max(1, requests // 2)),
                "-c", str(clients), "-P", "1", "-r", "100000000", "--csv",
                "EVALSHA", sha, "5", *keys.show_keys(show), keys.SEAT_CHANGES_CHANNEL,
                str(show), "b__rand_int__", "600000", "1", "99999999999999",  # no deadline
                *[f"{chr(65 + i)}__rand_int__" for i in range(seats)]]
        cpu0 = servers.server_cpu_s()["redis"]
        started = time.perf_counter()
        out = await _run(argv, timeout_s)
        elapsed = time.perf_counter() - started
        cpu = servers.server_cpu_s()["redis"] - cpu0
        rows = list(csv.DictReader(io.StringIO(out[out.index('"test"'):])))
        row = rows[-1]
        runs.append({"seats": seats, "requests": requests // 2, "elapsed_s": round(elapsed, 3),
                     "per_s": float(row["rps"]), "p50_ms": float(row["p50_latency_ms"]),
                     "p99_ms": float(row["p99_latency_ms"]), "server_cpu_s": round(cpu, 3)})
    total = sum(r["requests"] for r in runs)
    per_s = total / sum(r["requests"] / r["per_s"] for r in runs)
    return {"per_s": round(per_s, 1), "clients": clients, "runs": runs,
            # what one HOLD costs redis-server, the floor of a hold's Redis CPU
            "server_cpu_ms_per_op": round(sum(r["server_cpu_s"] for r in runs) * 1000
                                          / total, 4),
            "p50_ms": max(r["p50_ms"] for r in runs), "p99_ms": max(r["p99_ms"] for r in runs),
            "tool": str(binary), "command": "EVALSHA <HOLD sha> 4 <keys of one show> "
            "<channel> <show> b__rand_int__ 600000 A__rand_int__ B__rand_int__ [C__rand_int__]"}


# -- pgbench -----------------------------------------------------------------------

async def _pgbench(binary: Path, servers: ScratchServers, script: str, name: str,
                   clients: int, duration_s: float, defines: dict[str, int]) -> dict[str, Any]:
    folder = servers.folder / f"pgbench-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "script.sql").write_text(script)
    argv = [str(binary), "-h", servers.pg.host, "-p", str(servers.pg.port), "-U", PG_USER,
            "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, 2)),
            "-T", str(max(1, round(duration_s))), "-f", str(folder / "script.sql"),
            "--log", f"--log-prefix={folder / 'log'}",
            *[f"-D{k}={v}" for k, v in defines.items()], PG_DATABASE]
    cpu0 = servers.server_cpu_s()["postgres"]
    out = await _run(argv, duration_s * 4 + 60, cwd=folder,
                     env={"PGPASSWORD": servers.secrets.pg_password})
    cpu = servers.server_cpu_s()["postgres"] - cpu0
    latencies = []
    for log in folder.glob("log.*"):
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2].isdigit():
                latencies.append(int(parts[2]) / 1000)
    tps = next((float(line.split("=")[1].split()[0]) for line in out.splitlines()
                if line.startswith("tps =")), None)
    return {"pgbench_tps": tps, "latency": summarize(latencies), "clients": clients,
            "server_cpu_s": round(cpu, 3),
            "duration_s": max(1, round(duration_s)), "tool": str(binary)}


async def pg_limits(servers: ScratchServers, clients: int, duration_s: float) -> dict[str, Any]:
    binary = find_pgbench(servers.binaries)
    if binary is None:
        return {"skipped": "pgbench not found next to PostgreSQL nor on PATH"}
    hold = await _pgbench(binary, servers, PGBENCH_HOLD.format(
        blocks=BLOCKS, max_seats=CAPS.seats_per_show, max_holds=CAPS.holds_per_user), "hold",
        clients, duration_s, {})
    confirm = await _pgbench(binary, servers,
                             PGBENCH_CONFIRM.format(blocks=BLOCKS),
                             "confirm", clients, duration_s,
                             {"cap": servers.confirm_bookings, "cbase": servers.hold_shows + 1})
    conn = await servers.connect()
    try:
        held = await conn.fetchval("SELECT count(*) FROM booking WHERE id LIKE 'bh%'")
        attempted = await conn.fetchval("SELECT last_value FROM bench_hold_seq")
        sold = await conn.fetchval("SELECT count(*) FROM booking WHERE id LIKE 'cb%' "
                                   "AND status = 'CONFIRMED'")
    finally:
        await conn.close()
    hold.update(per_s=round(held / hold["duration_s"], 1), made=held, attempted=attempted,
                exhausted=held < attempted,
                server_cpu_ms_per_op=round(hold["server_cpu_s"] * 1000 / held, 4)
                if held else None)
    confirm.update(per_s=round(sold / confirm["duration_s"], 1), made=sold,
                   exhausted=sold >= servers.confirm_bookings,
                   server_cpu_ms_per_op=round(confirm["server_cpu_s"] * 1000 / sold, 4)
                   if sold else None)
    return {"hold_write": hold, "confirm": confirm}


# -- the stages of a hold, timed from Python at the hold phase's concurrency ---------

async def stage_timing(servers: ScratchServers, concurrency: int, duration_s: float,
                       max_requests: int) -> dict[str, Any]:
    redis = aioredis.Redis(host=servers.redis.host, port=servers.redis.port,
                           password=servers.secrets.redis_password,
                           max_connections=concurrency + 8)
    script = redis.register_script(HOLD)
    pool = await asyncpg.create_pool(pg_dsn(servers.pg), **pg_login(servers.secrets),
                                     min_size=min(concurrency, 50), max_size=concurrency)
    show_keys = keys.show_keys(2)
    rng = random.Random(7)

    async def redis_hold() -> None:
        seats = [f"T{rng.randrange(10**12)}" for _ in range(rng.randint(1, 4))]
        await script(keys=show_keys, args=[keys.SEAT_CHANGES_CHANNEL, 2,
                                           f"b{uuid.uuid4().hex}", 600000, 1, 4_102_444_800_000,
                                           *seats])

    async def pg_hold() -> None:  # one statement, as the node sends it (plus the draw)
        k = rng.randint(1, 4)
        async with pool.acquire() as conn:
            await conn.fetchrow(STAGE_PG_HOLD, k)

    try:
        out: dict[str, Any] = {
            "concurrency": concurrency,
            "redis_script": await _timed(redis_hold, concurrency, duration_s, max_requests),
            "pg_write": await _timed(pg_hold, concurrency, duration_s, max_requests)}
        async with pool.acquire() as conn:
            attempted = await conn.fetchval("SELECT last_value FROM bench_hold_seq")
        out["pg_write"]["exhausted"] = attempted > servers.hold_shows * BLOCKS
        return out
    finally:
        await pool.close()
        await redis.aclose()


async def _timed(call: Any, concurrency: int, duration_s: float,
                 max_requests: int) -> dict[str, Any]:
    for _ in range(min(concurrency, 20)):  # warm connections and prepared statements
        await call()
    latencies: list[float] = []
    deadline = time.perf_counter() + duration_s

    async def client() -> None:
        while time.perf_counter() < deadline and len(latencies) < max_requests:
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return summarize(latencies, time.perf_counter() - started)
