"""Load generator processes: closed-loop HTTP clients, bounded in time and count.

The bench starts `--load-procs` of these (`python loadgen.py`: stdlib, aiohttp,
uvloop, and `bookcluster.node.auth.mint` for tokens) and talks to each over
stdin/stdout, one JSON line at a time:

    parent -> spec     child: opens one ClientSession, warms `concurrency`
                       keep-alive connections, answers "ready"
    parent -> "go"     every child starts at once; runs until `duration_s`,
                       `max_requests` or its items run out
    child  -> result   latencies (ms), statuses, error codes, what it created

Clients are spread over `groups`: client i uses group i % len(groups), e.g.
the nodes of one region and the shows it books. Kinds: `holds` (1..4 random
free seats of random shows from the group's pool, which no other group or
child shares, so holds never collide; each hold by a fresh user with its own
token, minted here with the key of the spec's `topology`, so no per-user cap
or rate ever refuses one), `confirms` (each [booking id, owner's token,
captured payment id] once, with an Idempotency-Key), `flows` (as `holds`, then
each hold paid at the gateway simulator with the spec's `gateway` URL and API key,
captured at once, no webhook, and confirmed with its payment: one booking after
the other per client; `created` lists the confirmed bookings), `gets` (each reader
cycles the URLs of its group, e.g. the nodes of its region; `once` reads every
URL exactly once instead), `burst` (every request of a list at the same
moment, once; each [method, url, body, headers]) and the two ways of a rush on
one show (`rush.py` in benchlib): `best` (each person asks the home region for
the best block of the seats they want) and `pick` (each person reads the seat
map in their own region, picks as people do, holds, and picks again on a 409).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp

SCRIPT = Path(__file__).resolve()
REQUEST_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 120.0
TOKEN_TTL_S = 3600.0  # longer than any phase
CONFIRM_402_TRIES = 20


class _Run:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.rng = random.Random(spec.get("seed", 0))
        self.latencies: list[float] = []
        self.ok_latencies: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()  # 5xx by what failed (`answer_kind`)
        self.created: list[Any] = []
        self.results: list[dict[str, Any]] = []  # burst: one per request
        self.flow_ms: list[float] = []  # flows: each sold booking's hold -> confirm
        self.bytes = 0
        self.exhausted = False
        self.count = 0
        self.deadline = 0.0

    def more(self) -> bool:
        stop = self.spec.get("stop_file")  # the parent says it is over (a rush sold out)
        return (self.count < int(self.spec["max_requests"])
                and time.perf_counter() < self.deadline
                and not (stop and os.path.exists(stop)))

    async def request(self, http: aiohttp.ClientSession, method: str, url: str,
                      body: Any = None, headers: dict[str, str] | None = None,
                      want_json: bool = False) -> tuple[int, Any]:
        self.count += 1
        started = time.perf_counter()
        status, payload = 0, None
        try:
            async with http.request(method, url, json=body, headers=headers) as resp:
                raw = await resp.read()
                status = resp.status
            self.bytes += len(raw)
            if want_json or status >= 300:
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.errors[f"exception:{type(exc).__name__}"] += 1
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.latencies.append(elapsed_ms)
        self.statuses[str(status)] += 1
        if 200 <= status < 300:
            self.ok_latencies.append(elapsed_ms)
        elif isinstance(payload, dict):
            self.errors[f"{status} {payload.get('error')}"] += 1
            if status >= 500:
                self.failures[answer_kind({"status": status, **payload})] += 1
        return status, payload


def answer_kind(answer: dict[str, Any]) -> str:
    """An answer's status; for a 5xx also what failed (its message up to the first ';',
    e.g. "... cannot take writes now (redis master)"), without per-request details."""
    if answer["status"] < 500:
        return str(answer["status"])
    outcome = f", outcome {answer['outcome']}" if answer.get("outcome") else ""
    return f"{answer['status']} {answer.get('error')}: " \
        f"{(answer.get('message') or '').split(';')[0]}{outcome}"


def _minter(spec: dict[str, Any]) -> Callable[[str], str]:
    """user -> token, signed with the key of the spec's cluster (`topology`)."""
    from bookcluster.node.auth import mint
    from bookcluster.topology.load import load_topology

    topology = load_topology(spec["topology"])
    return lambda user: mint(topology, user, TOKEN_TTL_S)


class _Seats:
    """Draws holds from a group's pool (shared by the group's clients): `want` random
    free seats of a random show, `spec["seats"]` = [low, high] (1-4) of them."""

    def __init__(self, run: _Run, group: dict[str, Any]) -> None:
        self.run = run
        self.pool: dict[str, list[str]] = group["pool"]
        self.shows = [s for s in self.pool if self.pool[s]]
        self.low, self.high = run.spec.get("seats", [1, 4])

    def draw(self) -> tuple[str, list[str]] | None:
        while self.shows:
            at = self.run.rng.randrange(len(self.shows))
            show = self.shows[at]
            seats = self.pool[show]
            if len(seats) < self.high:  # too few left for the widest hold: drop the show
                self.shows[at] = self.shows[-1]
                self.shows.pop()
                continue
            want = self.run.rng.randint(self.low, self.high)
            return show, [seats.pop(self.run.rng.randrange(len(seats))) for _ in range(want)]
        self.run.exhausted = True
        return None


async def _hold(run: _Run, http: aiohttp.ClientSession, node: str, show: str,
                seats: list[str], token: str) -> list[Any] | None:
    """One hold; [booking, show, token, amount] when it was made."""
    status, body = await run.request(
        http, "POST", f"{node}/booking/seats/{show}/lock", {"seat_ids": seats},
        headers={"Authorization": f"Bearer {token}"}, want_json=True)
    if status == 201 and isinstance(body, dict):
        return [body["booking_id"], int(show), token, body["amount_paise"]]
    return None


def _user_prefix(run: _Run, index: int) -> str:
    return f"{run.spec.get('user', 'bench')}-{uuid.uuid4().hex[:8]}-{index}"


async def _fresh_holds(run: _Run, http: aiohttp.ClientSession, index: int,
                       group: dict[str, Any], token_for: Callable[[str], str]
                       ) -> AsyncIterator[tuple[str, float, Any]]:
    """Holds of drawn seats while the phase lasts, each by a fresh user (never near a
    per-user limit) at the group's next node: (node, when it started, the hold or None)."""
    nodes: list[str] = group["nodes"]
    seats = _Seats(run, group)
    prefix = _user_prefix(run, index)
    node = index
    made = 0
    while run.more():
        drawn = seats.draw()
        if drawn is None:
            return
        node = (node + 1) % len(nodes)
        made += 1
        started = time.perf_counter()
        yield nodes[node], started, await _hold(run, http, nodes[node], *drawn,
                                                token_for(f"{prefix}-{made}"))


async def _holds(run: _Run, http: aiohttp.ClientSession, index: int,
                 group: dict[str, Any], token_for: Callable[[str], str]) -> None:
    async for _node, _started, hold in _fresh_holds(run, http, index, group, token_for):
        if hold is not None:
            run.created.append(hold)


async def _flows(run: _Run, http: aiohttp.ClientSession, index: int,
                 group: dict[str, Any], token_for: Callable[[str], str]) -> None:
    """hold -> pay -> confirm, one booking after the other, each by a fresh user; a
    step refused ends that booking's flow. `run.flow_ms`: each sold booking's wall time
    from its hold to its confirm's answer."""
    gateway: dict[str, str] = run.spec["gateway"]
    pay_headers = {"Authorization": f"Bearer {gateway['api_key']}"}
    async for node, started, hold in _fresh_holds(run, http, index, group, token_for):
        if hold is None:
            continue
        booking, _show, token, amount = hold
        status, intent = await run.request(
            http, "POST", f"{gateway['url']}/intents",
            {"booking_id": booking, "amount_paise": amount, "region": group["region"],
             "capture_delay_ms": 0, "outcome": "capture", "webhook": False},
            headers=pay_headers, want_json=True)
        if status not in (200, 201) or not isinstance(intent, dict):
            continue
        # Captured on the simulator's next turn, before this confirm asks it; a 402
        # (not captured yet) is asked again a little later.
        for _ in range(CONFIRM_402_TRIES):
            status, _ = await run.request(
                http, "POST", f"{node}/booking/booking/{booking}/confirm",
                {"payment_id": intent["id"]},
                headers={"Authorization": f"Bearer {token}",
                         "Idempotency-Key": uuid.uuid4().hex})
            if status != 402 or not run.more():
                break
            await asyncio.sleep(0.005)
        if status == 200:
            run.created.append(booking)
            run.flow_ms.append((time.perf_counter() - started) * 1000)


async def _confirms(run: _Run, http: aiohttp.ClientSession, index: int,
                    nodes: list[str], bookings: Iterator[list[str]]) -> None:
    node = index
    while run.more():
        item = next(bookings, None)
        if item is None:
            run.exhausted = True
            return
        booking, token, payment = item
        node = (node + 1) % len(nodes)
        status, _ = await run.request(
            http, "POST", f"{nodes[node]}/booking/booking/{booking}/confirm",
            {"payment_id": payment},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex})
        if status == 200:
            run.created.append(booking)


async def _gets(run: _Run, http: aiohttp.ClientSession, index: int,
                shared: Iterator[str] | None) -> None:
    groups: list[list[str]] = run.spec["groups"]
    urls = groups[index % len(groups)] if groups else []
    at = run.rng.randrange(len(urls)) if urls else 0
    while run.more():
        if shared is not None:
            url = next(shared, None)
            if url is None:
                run.exhausted = True
                return
        else:
            at = (at + 1) % len(urls)
            url = urls[at]
        await run.request(http, "GET", url)


async def _burst_one(run: _Run, http: aiohttp.ClientSession, method: str, url: str,
                     body: Any, headers: dict[str, str] | None) -> None:
    started = time.perf_counter()
    status, payload = await run.request(http, method, url, body, headers, want_json=True)
    body = payload if isinstance(payload, dict) else {}
    run.results.append({"status": status, "ms": (time.perf_counter() - started) * 1000,
                        "error": body.get("error"),
                        # what a 5xx says failed (e.g. "redis master"): to find its cause
                        "message": body.get("message") if status >= 500 else None,
                        "outcome": body.get("outcome")})


async def _warm(http: aiohttp.ClientSession, urls: list[str], connections: int) -> None:
    """Open `connections` keep-alive connections, spread over the hosts of `urls`."""
    async def one(url: str) -> None:
        try:
            async with http.get(url) as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError):
            pass

    if urls:
        await asyncio.gather(*(one(urls[i % len(urls)]) for i in range(connections)))


# -- a rush on one show: best available vs picking from the seat map ---------------

RUSH_PAUSE_S = 0.05  # after a 429 or 503 a person waits this long (or Retry-After, capped)
RETURNS_POLL_S = 0.5  # a client that found the show sold out looks at the map this often


class _Rush:
    """One show's rush, shared by one process's clients: people come one after the
    other to each client, each a fresh user wanting `seats` = [low, high] seats; every
    hold attempt and every seat-map read is recorded with its wall-clock time."""

    def __init__(self, run: _Run, token_for: Callable[[str], str], index: int) -> None:
        self.run = run
        self.spec = run.spec
        self.token_for = token_for
        self.prefix = _user_prefix(run, index)
        self.people = 0
        self.homes: list[str] = self.spec["home_nodes"]
        self.at = index
        self.index = index

    def person(self) -> tuple[int, dict[str, str]]:
        self.people += 1
        low, high = self.spec["seats"]
        token = self.token_for(f"{self.prefix}-{self.people}")
        return self.run.rng.randint(low, high), {"Authorization": f"Bearer {token}"}

    def home(self) -> str:
        self.at = (self.at + 1) % len(self.homes)
        return self.homes[self.at]

    async def seat_map(self, http: aiohttp.ClientSession) -> list[dict[str, Any]] | None:
        """The show's seat map from a node of this client's own region (None: no answer)."""
        reads: list[str] = self.spec["read_nodes"][self.index % len(self.spec["read_nodes"])]
        node = reads[self.run.rng.randrange(len(reads))]
        at = time.time()
        status = 0
        seats: list[dict[str, Any]] | None = None
        try:
            async with http.get(f"{node}/shows/{self.spec['show']}/seats") as resp:
                status = resp.status
                if status == 200:
                    seats = (await resp.json())["seats"]
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            pass
        self.run.results.append({"kind": "read", "t": at, "status": status,
                                 "ms": (time.time() - at) * 1000})
        return seats

    async def returns(self, http: aiohttp.ClientSession) -> bool:
        """Sold out as far as this client can tell: it looks at the seat map now and then
        (a seat held by a request whose outcome was unknown comes back when that hold
        lapses), until a seat is free (True) or the rush is over (False)."""
        while self.run.more():
            await asyncio.sleep(RETURNS_POLL_S)
            seats = await self.seat_map(http)
            if seats and any(s.get("status") == "AVAILABLE" for s in seats):
                return True
        return False

    async def hold(self, http: aiohttp.ClientSession, path: str, body: dict[str, Any],
                   headers: dict[str, str], kind: str) -> tuple[int, Any]:
        at = time.time()
        status, answer = await self.run.request(http, "POST", f"{self.home()}{path}", body,
                                                headers, want_json=True)
        answer = answer if isinstance(answer, dict) else {}
        self.run.results.append({
            "kind": kind, "t": at, "done": time.time(), "status": status,
            "error": answer.get("error"),
            "seats": len(answer.get("seat_ids") or []) if status == 201 else 0,
            "want": body.get("count") or len(body.get("seat_ids") or [])})
        if status in (429, 503):
            wait = min(float(answer.get("retry_after_s") or RUSH_PAUSE_S), 1.0)
            await asyncio.sleep(max(RUSH_PAUSE_S, wait))
        return status, answer


async def _best(run: _Run, http: aiohttp.ClientSession, index: int,
                token_for: Callable[[str], str]) -> None:
    """People who ask for the best `want` seats; refused (409 no_block_available), they
    accept seats apart, then one seat fewer each time; refused one seat apart, the show
    is sold out for them, and the client waits for seats to come back (`returns`).
    As the booking page does, a request refused with 429 or 503 is sent again with the
    same Idempotency-Key (a 503 `unknown` may have held seats: the retry gets them)."""
    rush = _Rush(run, token_for, index)
    path = f"/booking/seats/{run.spec['show']}/best"
    while run.more():
        want, headers = rush.person()
        split = False
        asked: dict[str, Any] = {}
        key = ""
        while run.more():
            body: dict[str, Any] = {"count": want}
            if split:
                body["allow_split"] = True
            if body != asked:  # another request is another hold
                asked, key = body, uuid.uuid4().hex
            status, answer = await rush.hold(http, path, body,
                                             {**headers, "Idempotency-Key": key}, "best")
            if status == 201:
                break
            if status == 409 and answer.get("error") == "no_block_available":
                if not split:
                    split = True
                elif want > 1:
                    want -= 1
                elif await rush.returns(http):
                    break  # a seat came back: the next person tries
                else:
                    return
            elif status not in (429, 503):
                break  # refused for another reason: this person leaves


async def _pick(run: _Run, http: aiohttp.ClientSession, index: int,
                token_for: Callable[[str], str]) -> None:
    """Today's users: read the seat map at a node of their own region, pick `want` seats
    as `picking.choose_seats` does (mostly side by side, half of those on the first
    few free runs: the favourite seats), hold them at the home region, and on a 409 read
    the map again and pick again, up to `tries` holds; on a map with no free seat the
    client waits for seats to come back (`returns`). As the booking page does, a hold
    refused with 429 or 503 is sent again, same seats, same Idempotency-Key."""
    sys.path.insert(0, str(SCRIPT.parents[1]))  # loadtests/: picking.py
    from picking import choose_seats

    rush = _Rush(run, token_for, index)
    path = f"/booking/seats/{run.spec['show']}/lock"
    while run.more():
        want, headers = rush.person()
        for _ in range(int(run.spec["tries"])):
            if not run.more():
                return
            seats = await rush.seat_map(http)
            if seats is None:
                await asyncio.sleep(RUSH_PAUSE_S)
                continue
            picked = choose_seats(run.rng, seats, want)
            if not picked:  # the map shows no free seat
                if await rush.returns(http):
                    break
                return
            keyed = {**headers, "Idempotency-Key": uuid.uuid4().hex}
            status, _ = await rush.hold(http, path, {"seat_ids": picked}, keyed, "pick")
            while status in (429, 503) and run.more():
                status, _ = await rush.hold(http, path, {"seat_ids": picked}, keyed, "pick")
            if status != 409:
                break


async def run_spec(spec: dict[str, Any], ready: Any, go: Any) -> dict[str, Any]:
    """Run one spec; `ready()` is called after warm-up, `await go()` starts the clock."""
    run = _Run(spec)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    token_for = _minter(spec) if spec["kind"] in ("holds", "flows", "best", "pick") \
        else None
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        concurrency = int(spec["concurrency"])
        await _warm(http, spec.get("warm_urls", []), concurrency)
        ready()
        await go()
        kind = spec["kind"]
        cpu0 = _cpu_s()
        started_at, t0 = time.time(), time.perf_counter()
        run.deadline = t0 + float(spec["duration_s"])
        groups = spec.get("groups", [])
        if kind == "holds":
            assert token_for is not None
            tasks = [_holds(run, http, i, groups[i % len(groups)], token_for)
                     for i in range(concurrency)]
        elif kind == "flows":
            assert token_for is not None
            tasks = [_flows(run, http, i, groups[i % len(groups)], token_for)
                     for i in range(concurrency)]
        elif kind == "confirms":
            queues = [iter(g["bookings"]) for g in groups]
            tasks = [_confirms(run, http, i, groups[i % len(groups)]["nodes"],
                               queues[i % len(groups)]) for i in range(concurrency)]
        elif kind == "gets":
            shared = iter(spec["urls"]) if spec.get("once") else None
            tasks = [_gets(run, http, i, shared) for i in range(concurrency)]
        elif kind in ("best", "pick"):
            assert token_for is not None
            person = _best if kind == "best" else _pick
            tasks = [person(run, http, i, token_for) for i in range(concurrency)]
        elif kind == "burst":
            tasks = [_burst_one(run, http, m, u, b, h) for m, u, b, h in spec["requests"]]
        else:
            raise ValueError(f"unknown kind {kind!r}")
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
        cpu = _cpu_s() - cpu0
    return {"started": started_at, "elapsed_s": elapsed, "cpu_s": cpu,
            "latencies": run.latencies, "ok_latencies": run.ok_latencies,
            "statuses": dict(run.statuses), "errors": dict(run.errors),
            "failures": dict(run.failures), "created": run.created, "results": run.results,
            "bytes": run.bytes, "flow_ms": run.flow_ms,
            "exhausted": run.exhausted, "pid": os.getpid()}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _child_main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 28)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    spec = json.loads(await reader.readline())

    def ready() -> None:
        sys.stdout.write("ready\n")
        sys.stdout.flush()

    async def go() -> None:
        line = await reader.readline()
        if line.strip() != b"go":
            raise SystemExit("loadgen: expected 'go'")

    result = await run_spec(spec, ready, go)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


# -- parent side ---------------------------------------------------------------

async def run_processes(specs: list[dict[str, Any]], timeout_s: float,
                        started: Callable[[], object] | None = None,
                        ended: Callable[[], object] | None = None) -> dict[str, Any]:
    """Run one child per spec, start them together, and merge their results.
    `started()` is called just before the children are told to go, `ended()` as soon
    as the last one answered: the window a caller measures around (no start-up, no
    warm-up, no exit)."""
    procs = []
    try:
        for spec in specs:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(SCRIPT),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, limit=1 << 28)
            procs.append(proc)
            assert proc.stdin is not None
            proc.stdin.write((json.dumps(spec) + "\n").encode())
            await proc.stdin.drain()
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)
            if line.strip() != b"ready":
                raise RuntimeError(f"load generator failed to start: {await _stderr(proc)}")
        if started is not None:
            started()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        lines = []
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout_s)
            if not line:
                raise RuntimeError(f"load generator died: {await _stderr(proc)}")
            lines.append(line)
        if ended is not None:
            ended()
        for proc in procs:
            await proc.wait()
        return merge([json.loads(line) for line in lines])
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def _stderr(proc: asyncio.subprocess.Process) -> str:
    assert proc.stderr is not None
    try:
        data = await asyncio.wait_for(proc.stderr.read(), 5)
    except TimeoutError:
        return "(no output)"
    return data.decode(errors="replace")[-2000:]


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    started = min(r["started"] for r in results)
    ended = max(r["started"] + r["elapsed_s"] for r in results)
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for r in results:
        statuses.update(r["statuses"])
        errors.update(r["errors"])
        failures.update(r["failures"])
    return {
        "started": started,
        "elapsed_s": ended - started,
        "client_cpu_s": sum(r["cpu_s"] for r in results),
        "latencies": [x for r in results for x in r["latencies"]],
        "ok_latencies": [x for r in results for x in r["ok_latencies"]],
        "statuses": dict(statuses), "errors": dict(errors), "failures": dict(failures),
        "created": [x for r in results for x in r["created"]],
        "results": [x for r in results for x in r["results"]],
        "flow_ms": [x for r in results for x in r.get("flow_ms", [])],
        "bytes": sum(r["bytes"] for r in results),
        "exhausted": any(r["exhausted"] for r in results),
        "processes": len(results),
    }


if __name__ == "__main__":
    try:
        import uvloop
        uvloop.run(_child_main())
    except ImportError:
        asyncio.run(_child_main())
