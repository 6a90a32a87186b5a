"""A lean crowd for the on-sale benchmark: many users, few objects, raw HTTP/1.1.

One process of the crowd (`python queuegen.py SPEC.json`; `onsale.py` starts a few):
its users arrive at a steady rate from `go_at` (wall clock), each joins the queue at
a node of the home region, then polls its position at a node of its own region (users
are spread over the regions) as the booking page does: again after the answer's
`poll_after_s`, backing off (doubling, at most 30 s) on an error. A user stops when
told `sold_out` or `expired`; an admitted user shops: best available with the pass
(1 to `max_party` seats, seats apart when no block is left, one fewer each time),
pays at the gateway simulator (captured at once, no webhook) and confirms. A hold
or confirm refused with 429 or 503 is sent again under the same Idempotency-Key.

No object per user but a row in a few lists, no coroutine per user: a heap of due
steps and `workers` coroutines that send them over a pool of keep-alive connections
per node (asyncio streams, requests written by hand, answers read by Content-Length
or chunks). The result (JSON, to the spec's `out`): per kind of request, its answers
and [done_s, ms] pairs (done_s from go_at), plus the users' outcomes.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import random
import resource
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BACKOFF_S = (1.0, 30.0)
CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 30.0


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: dict[str, str],
                      body: bytes | None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT_S)
        assert self.reader is not None
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (body or b""))
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionResetError("closed by the server")
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and "close" in value.lower():
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readline()
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readline()
            data = b"".join(parts)
        else:
            data = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Pool:
    """Keep-alive connections to one server, at most `size` open."""

    def __init__(self, url: str, size: int) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.free: list[Conn] = []
        self.gate = asyncio.Semaphore(size)

    async def request(self, method: str, path: str, headers: dict[str, str],
                      body: bytes | None = None) -> tuple[int, bytes]:
        async with self.gate:
            conn = self.free.pop() if self.free else Conn(self.host, self.port)
            reused = conn.writer is not None
            try:
                try:
                    answer = await asyncio.wait_for(conn.request(method, path, headers, body),
                                                    REQUEST_TIMEOUT_S)
                except (ConnectionResetError, BrokenPipeError):
                    if not reused:
                        raise
                    # A keep-alive connection the server closed while it sat idle here:
                    # sent again on a new one, as browsers and HTTP clients do.
                    conn.close()
                    answer = await asyncio.wait_for(conn.request(method, path, headers, body),
                                                    REQUEST_TIMEOUT_S)
            except BaseException:
                conn.close()
                raise
            self.free.append(conn)
            return answer


class Crowd:
    def __init__(self, spec: dict[str, Any]) -> None:
        from bookcluster.node.auth import mint
        from bookcluster.topology.load import load_topology

        self.spec = spec
        topology = load_topology(Path(spec["topology"]))
        self.mint = lambda user: mint(topology, user, 7200.0)
        self.rng = random.Random(spec["seed"])
        size = int(spec["conns_per_node"])
        self.pools = {url: Pool(url, size) for group in spec["read_nodes"] for url in group}
        self.pools.update({url: Pool(url, size) for url in spec["home_nodes"]})
        self.gateway = Pool(spec["gateway"]["url"], size)
        self.onsale, self.show = spec["onsale"], int(spec["show"])
        n = int(spec["users"])
        self.names = [f"{spec['prefix']}{i}" for i in range(n)]
        self.tokens: list[str | None] = [None] * n
        self.tickets: list[str | None] = [None] * n
        self.backoff = [0.0] * n
        self.heap: list[tuple[float, int, int, str]] = []
        self.counter = 0
        self.go = float(spec["go_at"])
        self.end = self.go + float(spec["max_s"])
        self.done = 0  # users in a final state
        self.outcomes: Counter[str] = Counter()
        self.answers: dict[str, Counter[str]] = {}
        self.timings: dict[str, list[tuple[float, float]]] = {}
        self.sold_out_told: list[float] = []  # done_s of each user told sold_out
        self.admitted: list[list[Any]] = []  # [place, done_s] per admitted user
        self.sold: list[list[Any]] = []  # [booking, seats, done_s] per confirmed
        # user name -> its holds' answers [key, status, error, outcome, booking], kept for
        # a user whose shopping met anything but a plain 201 (the audit's evidence)
        self.trails: dict[str, list[list[Any]]] = {}
        self.stop = Path(spec["stop_file"])
        rate = float(spec["arrivals_per_s"])
        for i in range(n):
            self.at(self.go + i / rate, i, "join")

    def at(self, when: float, user: int, step: str) -> None:
        self.counter += 1
        heapq.heappush(self.heap, (when, self.counter, user, step))

    def final(self, user: int, outcome: str) -> None:
        self.done += 1
        self.outcomes[outcome] += 1

    async def call(self, kind: str, pool: Pool, method: str, path: str,
                   headers: dict[str, str], body: Any = None) -> tuple[int, Any]:
        started = time.time()
        try:
            status, raw = await pool.request(
                method, path, headers, None if body is None else json.dumps(body).encode())
            try:
                payload = json.loads(raw) if raw else None
            except ValueError:
                payload = None
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            status, payload = 0, {"error": f"exception:{type(exc).__name__}"}
        now = time.time()
        error = (payload.get("error") if isinstance(payload, dict)
                 and (status >= 300 or status == 0) else None)
        self.answers.setdefault(kind, Counter())[f"{status} {error}" if error
                                                 else str(status)] += 1
        self.timings.setdefault(kind, []).append((round(now - self.go, 3),
                                                  round((now - started) * 1000, 2)))
        return status, payload

    def retry(self, user: int, step: str) -> None:
        b = self.backoff[user] = min(BACKOFF_S[1], max(BACKOFF_S[0], self.backoff[user] * 2))
        self.at(time.time() + b * (0.5 + self.rng.random()), user, step)

    def headers(self, user: int) -> dict[str, str]:
        token = self.tokens[user]
        if token is None:
            token = self.tokens[user] = self.mint(self.names[user])
        return {"Authorization": f"Bearer {token}"}

    async def step(self, user: int, step: str) -> None:
        if step == "join":
            nodes = self.spec["home_nodes"]
            status, answer = await self.call(
                "join", self.pools[nodes[user % len(nodes)]], "POST",
                f"/onsales/{self.onsale}/join", self.headers(user))
            if status != 200:
                self.retry(user, "join")
                return
            self.tickets[user] = answer["ticket"]
            await self.answered(user, answer)
        elif step == "poll":
            region = self.spec["read_nodes"][user % len(self.spec["read_nodes"])]
            node = region[(user // 3) % len(region)]
            status, answer = await self.call(
                "poll", self.pools[node], "GET", f"/onsales/{self.onsale}/position",
                {**self.headers(user), "X-Bookcluster-Queue-Ticket": str(self.tickets[user])})
            if status != 200:
                self.retry(user, "poll")
                return
            await self.answered(user, answer)

    async def answered(self, user: int, answer: dict[str, Any]) -> None:
        self.backoff[user] = 0.0
        state = answer.get("state")
        if state == "admitted":
            self.admitted.append([answer.get("place"), round(time.time() - self.go, 3)])
            await self.shop(user, answer["pass"])
        elif state == "sold_out":
            self.sold_out_told.append(round(time.time() - self.go, 3))
            self.final(user, "told_sold_out")
        elif state == "expired":
            self.final(user, "expired")
        else:
            after = float(answer.get("poll_after_s") or 15.0)
            self.at(time.time() + after, user, "poll")

    async def shop(self, user: int, admission: str) -> None:
        nodes = self.spec["home_nodes"]
        pool = self.pools[nodes[(user + 1) % len(nodes)]]
        want = self.rng.randint(1, int(self.spec["max_party"]))
        split, asked, key = False, {}, ""
        tries = 0
        trail: list[list[Any]] = []
        while time.time() < self.end and tries < 50:
            tries += 1
            body: dict[str, Any] = {"count": want, **({"allow_split": True} if split else {})}
            if body != asked:
                asked, key = body, uuid.uuid4().hex
            status, answer = await self.call(
                "hold", pool, "POST", f"/booking/seats/{self.show}/best",
                {**self.headers(user), "X-Bookcluster-Admission": admission,
                 "Idempotency-Key": key}, body)
            said = answer if isinstance(answer, dict) else {}
            trail.append([key[:8], status, said.get("error"), said.get("outcome"),
                          said.get("booking_id")])
            if status != 201 and status != 409:
                self.trails[self.names[user]] = trail
            if status == 201:
                break
            if status == 409 and (answer or {}).get("error") == "no_block_available":
                if not split:
                    split = True
                elif want > 1:
                    want -= 1
                else:
                    self.final(user, "admitted_no_seat")
                    return
            elif status in (0, 429, 503):
                await asyncio.sleep(0.2 * tries)
            else:
                self.final(user, f"hold_refused_{status}")
                return
        else:
            self.final(user, "hold_gave_up")
            return
        booking, amount = answer["booking_id"], answer["amount_paise"]
        gateway = self.spec["gateway"]
        status, intent = await self.call(
            "pay", self.gateway, "POST", "/intents",
            {"Authorization": f"Bearer {gateway['api_key']}"},
            {"booking_id": booking, "amount_paise": amount, "region": self.spec["home"],
             "capture_delay_ms": 0, "outcome": "capture", "webhook": False})
        if status not in (200, 201):
            self.final(user, "pay_refused")
            return
        key = uuid.uuid4().hex
        for tries in range(1, 60):
            status, _ = await self.call(
                "confirm", pool, "POST", f"/booking/booking/{booking}/confirm",
                {**self.headers(user), "Idempotency-Key": key}, {"payment_id": intent["id"]})
            if status == 200:
                self.sold.append([booking, len(answer.get("seats") or answer.get("seat_ids")
                                               or []), round(time.time() - self.go, 3)])
                self.final(user, "bought")
                return
            if status not in (0, 402, 429, 503):
                break
            await asyncio.sleep(min(1.0, 0.02 * tries))
        self.final(user, f"confirm_refused_{status}")

    async def worker(self, queue: asyncio.Queue[tuple[int, str]]) -> None:
        while True:
            user, step = await queue.get()
            try:
                await self.step(user, step)
            except Exception as exc:  # noqa: BLE001 - counted, the user goes on polling
                self.answers.setdefault("bug", Counter())[repr(exc)[:120]] += 1
                self.retry(user, "poll" if self.tickets[user] else "join")

    async def run(self) -> None:
        queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        workers = [asyncio.create_task(self.worker(queue))
                   for _ in range(int(self.spec["workers"]))]
        await asyncio.sleep(max(0.0, self.go - time.time()))
        n = len(self.names)
        while self.done < n and time.time() < self.end and not self.stop.exists():
            now = time.time()
            while self.heap and self.heap[0][0] <= now:
                _, _, user, step = heapq.heappop(self.heap)
                queue.put_nowait((user, step))
            wait = self.heap[0][0] - now if self.heap else 0.05
            await asyncio.sleep(min(max(wait, 0.001), 0.05))
        self.unfinished = n - self.done
        self.lag_s = 0.0
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    def result(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"users": len(self.names), "unfinished": self.unfinished,
                "outcomes": dict(self.outcomes),
                "answers": {k: dict(v) for k, v in self.answers.items()},
                "timings": self.timings, "sold_out_told": self.sold_out_told,
                "admitted": self.admitted, "sold": self.sold, "trails": self.trails,
                "cpu_s": usage.ru_utime + usage.ru_stime}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    crowd = Crowd(spec)
    asyncio.run(crowd.run())
    Path(spec["out"]).write_text(json.dumps(crowd.result()))


if __name__ == "__main__":
    main()
