"""The one prober: every health probe of a store or process asks and judges here.

Its callers: `bookcluster status` and the launcher's start-up waits (`probe_all`,
`wait_healthy`, `wait_leader`), the operator page (`bookcluster.node.overview`:
`redis_replication`, `sentinel_master`, `pg_position`, `readiness`, `worker_state`)
and the container health check (`check`, blocking, for
`python3 -m bookcluster.deploy.health_check`).

Three parts:
- **Readers** (pure): what an answer says. A Redis server is healthy as a master, or
  as a replica whose link to its master is up; a sentinel when it watches masters; a
  PostgreSQL member (Patroni's `GET /patroni`) when it runs as the primary or streams
  from it; etcd and our processes when they say healthy.
- **Asking, async** (many processes at once): aiohttp, asyncpg and Patroni's API are
  imported on first use, so importing this module costs no client library.
- **Asking, blocking** (one process: the container health check): sockets and
  `http.client`. An engine runs it for every container every few seconds, so it
  imports no asyncio, redis-py or aiohttp (asyncio itself is imported inside the
  async functions): a check costs 0.08-0.11 s of CPU, where importing asyncio would
  add 0.05 s, redis-py 0.16 s and aiohttp 0.2 s (measured 2026-12, 2 cores).

Redis is asked in one RESP conversation per probe (AUTH, then one command), packed
and parsed by hiredis (the parser redis-py uses) in both modes: a probe has no use
for redis-py's pools and retries, and both modes read the very same replies.
PostgreSQL members are asked through Patroni: their role changes with every failover,
so a member's row says what it is now.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from bookcluster.topology.secrets import Secrets

if TYPE_CHECKING:
    import aiohttp

    from bookcluster.topology.model import Endpoint, Region, Topology

PROBE_TIMEOUT_S = 2.0
WAL_POSITION = """
SELECT pg_is_in_recovery() AS recovery,
       (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
             ELSE pg_current_wal_lsn() END - '0/0'::pg_lsn)::bigint AS lsn"""


# -- Readers: what an answer says ------------------------------------------------------

def parse_info(text: str) -> dict[str, str]:
    """Redis INFO's answer as `field -> value` (section headers and blank lines skipped)."""
    fields = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class Replication(NamedTuple):
    """What a Redis server says of its role (INFO replication)."""

    role: str  # master | replica
    offset: int | None  # its replication offset: the master's, or how far a replica got
    link: str | None = None  # a replica's master_link_status: up | down
    master: str | None = None  # host:port a replica follows (maybe a WAN proxy)

    @property
    def healthy(self) -> bool:
        return self.role == "master" or self.link == "up"

    def row(self) -> dict[str, Any]:
        """The status table's fields."""
        if self.role == "master":
            return {"healthy": True, "redis_role": "master", "repl_offset": self.offset}
        return {"healthy": self.healthy, "redis_role": "replica", "link": self.link,
                "master": self.master, "repl_offset": self.offset}


def read_replication(info: Mapping[str, str]) -> Replication:
    if info.get("role") == "master":
        return Replication("master", _int(info.get("master_repl_offset")))
    return Replication("replica", _int(info.get("slave_repl_offset")),
                       link=info.get("master_link_status"),
                       master=f"{info.get('master_host')}:{info.get('master_port')}")


def read_sentinel_masters(reply: Any) -> dict[str, dict[str, Any]]:
    """SENTINEL MASTERS (a list of flat field/value lists) as `name -> where it sees that
    master, with Sentinel's flags for it` (`master`, or e.g. `master,s_down`)."""
    seen = {}
    for flat in reply if isinstance(reply, list) else []:
        state = dict(zip(flat[::2], flat[1::2], strict=False))
        seen[str(state.get("name"))] = {
            "address": f"{state.get('ip')}:{state.get('port')}",
            "flags": state.get("flags", ""),
            "replicas": _int(state.get("num-slaves")),
            "other_sentinels": _int(state.get("num-other-sentinels"))}
    return seen


def read_master_addr(reply: Any) -> tuple[str, int] | None:
    """SENTINEL GET-MASTER-ADDR-BY-NAME: (host, port), or None for a name it does not watch."""
    if isinstance(reply, list) and len(reply) == 2 and _int(reply[1]) is not None:
        return str(reply[0]), int(reply[1])
    return None


def read_patroni_member(state: Mapping[str, Any]) -> dict[str, Any]:
    """A member's own view (`GET /patroni`): healthy when PostgreSQL runs and is the
    primary, or a replica streaming from it."""
    role = state.get("role")
    running = state.get("state") == "running"
    streaming = state.get("replication_state") == "streaming"
    return {"healthy": running and (role in ("primary", "master") or streaming),
            "pg_role": role, "timeline": state.get("timeline"),
            "link": state.get("replication_state"), "pg_state": state.get("state")}


def read_patroni_cluster(view: Mapping[str, Any], api: str) -> dict[str, Any]:
    """What the cluster view (`GET /cluster`) adds for the member at `api`: the leader,
    its role there (leader | sync_standby | replica), its name and lag."""
    members = view.get("members", [])
    leader = next((m for m in members if m.get("role") == "leader"), None)
    out: dict[str, Any] = {"leader": leader["name"] if leader else None}
    me = next((m for m in members if m.get("api_url", "").startswith(api)), None)
    if me is not None:
        out["member"] = me.get("name")
        if me.get("role"):
            out["pg_role"] = me["role"]
        if isinstance(me.get("lag"), int):
            out["lag_bytes"] = me["lag"]
    return out


def read_etcd(status: int, body: Any) -> dict[str, Any]:
    return {"healthy": status == 200 and isinstance(body, dict)
            and body.get("health") == "true"}


def read_healthz(status: int, body: Any) -> dict[str, Any]:
    """A node, worker, gateway or WAN proxy: healthy on 200; nodes and workers add the
    topology epoch they route by."""
    out: dict[str, Any] = {"healthy": status == 200}
    if isinstance(body, dict) and isinstance(body.get("epoch"), int):
        out["epoch"] = body["epoch"]
    return out


def read_readyz(body: Any) -> dict[str, Any]:
    body = body if isinstance(body, dict) else {}
    return {"up": True, "ready": bool(body.get("ready")), "checks": body.get("checks", {})}


def read_worker_metrics(text: str) -> dict[str, Any]:
    """A worker's /metrics: queue depth per state, outbox backlog, mirror generation."""
    from prometheus_client.parser import text_string_to_metric_families

    queue: dict[str, int] = {}
    out: dict[str, Any] = {"up": True, "queue": queue}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "bookcluster_queue_depth":
                queue[sample.labels.get("state", "?")] = int(sample.value)
            elif sample.name == "bookcluster_outbox_pending":
                out["outbox_pending"] = int(sample.value)
            elif sample.name == "bookcluster_mirror_generation":
                out["mirror_generation"] = int(sample.value)
    return out


def lag_bytes(source_offset: Any, copy_offset: Any) -> int | None:
    """How far a copy is behind its source, when both answered (never negative: the
    two are read at slightly different moments)."""
    if source_offset is None or copy_offset is None:
        return None
    return max(0, int(source_offset) - int(copy_offset))


def container_healthy(proc: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    """The container health check's decision (`bookcluster probe` and
    `python3 -m bookcluster.deploy.health_check`): healthy; or a replica of another
    region's master that answers, whatever its link (that master's host may be down)."""
    if row.get("healthy"):
        return True
    other_master = proc.get("role") == "redis-replica" and proc.get("source") != proc.get(
        "region")
    return other_master and row.get("redis_role") is not None


# -- RESP: one conversation, packed and parsed by hiredis --------------------------------

_MORE = object()  # hiredis: no whole reply yet


def _resp_reader() -> Any:
    import hiredis

    # An error reply is returned (then raised by us) as a ConnectionError: an OSError,
    # like a refused or broken connection.
    return hiredis.Reader(replyError=ConnectionError, protocolError=ConnectionError,
                          encoding="utf-8", errors="replace", notEnoughData=_MORE)


def _resp_request(password: str, command: Sequence[str]) -> bytes:
    import hiredis

    pack: Any = hiredis.pack_command  # its stub types 1-tuples only
    return bytes(pack(("AUTH", password))) + bytes(pack(tuple(command)))


def _resp_take(reader: Any, replies: list[Any]) -> bool:
    """Move whole replies out of `reader`; True once both (AUTH's and the command's) are in."""
    while len(replies) < 2:
        reply = reader.gets()
        if reply is _MORE:
            return False
        if isinstance(reply, ConnectionError):
            raise reply
        replies.append(reply)
    return True


async def redis_ask(host: str, port: int, password: str, *command: str,
                    timeout_s: float = PROBE_TIMEOUT_S) -> Any:
    """One command to a Redis server or sentinel, after AUTH; its reply."""
    import asyncio

    async def conversation() -> Any:
        stream, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(_resp_request(password, command))
            reader, replies = _resp_reader(), list[Any]()
            while not _resp_take(reader, replies):
                data = await stream.read(65536)
                if not data:
                    raise ConnectionError(f"{host}:{port} closed the connection")
                reader.feed(data)
            return replies[1]
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass  # reset by a server going down: closed all the same

    return await asyncio.wait_for(conversation(), timeout_s)


def redis_ask_blocking(host: str, port: int, password: str, *command: str,
                       timeout_s: float = PROBE_TIMEOUT_S) -> Any:
    with socket.create_connection((host, port), timeout_s) as sock:
        sock.sendall(_resp_request(password, command))
        reader, replies = _resp_reader(), list[Any]()
        while not _resp_take(reader, replies):
            data = sock.recv(65536)
            if not data:
                raise ConnectionError(f"{host}:{port} closed the connection")
            reader.feed(data)
        return replies[1]


# -- Asking, async ------------------------------------------------------------------------

async def redis_replication(host: str, port: int, password: str,
                            timeout_s: float = PROBE_TIMEOUT_S) -> Replication:
    return read_replication(parse_info(str(await redis_ask(
        host, port, password, "INFO", "replication", timeout_s=timeout_s))))


async def sentinel_master(topology: Topology, region: str,
                          timeout_s: float) -> tuple[Endpoint, Endpoint]:
    """Where the first sentinel that answers (the region's own first) sees `region`'s
    Redis master now: (master, that sentinel). Raises LookupError naming each sentinel's
    failure."""
    from bookcluster.topology.model import Endpoint

    errors = []
    for ep in topology.sentinels(first=region):
        try:
            answer = await redis_ask(ep.host, ep.port, topology.secrets.redis_password,
                                     "SENTINEL", "GET-MASTER-ADDR-BY-NAME", region,
                                     timeout_s=timeout_s)
        except (OSError, TimeoutError) as exc:
            errors.append(f"{ep}: {type(exc).__name__} {exc}".rstrip())
            continue
        found = read_master_addr(answer)
        if found is not None:
            return Endpoint(*found), ep
        errors.append(f"{ep}: does not watch {region}")
    raise LookupError("; ".join(errors) or "no sentinel in the topology")


async def pg_position(address: str, login: Mapping[str, Any],
                      timeout_s: float = PROBE_TIMEOUT_S) -> tuple[bool, int]:
    """(in recovery, WAL position: written on a primary, replayed on a standby)."""
    import asyncpg

    conn = await asyncpg.connect(address, timeout=timeout_s, **login)
    try:
        row = await conn.fetchrow(WAL_POSITION, timeout=timeout_s)
    finally:
        await conn.close(timeout=timeout_s)
    assert row is not None
    return bool(row["recovery"]), int(row["lsn"])


async def _http(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[int, Any]:
    """(status, JSON body or None)."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http:
        async with http.get(url) as resp:
            text = await resp.text()
            status = resp.status
    try:
        return status, json.loads(text)
    except ValueError:
        return status, None


async def readiness(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """A node's `/readyz` (the operator page)."""
    async with http.get(f"{base}/readyz") as resp:
        return read_readyz(await resp.json(content_type=None))


async def worker_state(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """A worker's `/metrics` (the operator page)."""
    async with http.get(f"{base}/metrics") as resp:
        if resp.status != 200:
            return {"up": False, "error": f"/metrics answered {resp.status}"}
        return read_worker_metrics(await resp.text())


async def scrape_metric(session: aiohttp.ClientSession, address: str, name: str,
                        **labels: str) -> float:
    """Sum of the samples `name` on a process's /metrics whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    async with session.get(f"{address}/metrics") as resp:
        text = await resp.text()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v
                                              for k, v in labels.items()))


async def _probe_redis(proc: Mapping[str, Any], secrets: Secrets) -> dict[str, Any]:
    """Any Redis server, whatever the topology called it: its role now."""
    return (await redis_replication(proc["host"], proc["port"], secrets.redis_password)).row()


async def _probe_sentinel(proc: Mapping[str, Any], secrets: Secrets) -> dict[str, Any]:
    seen = read_sentinel_masters(await redis_ask(
        proc["host"], proc["port"], secrets.redis_password, "SENTINEL", "MASTERS"))
    return {"healthy": bool(seen), "sentinel_masters": seen}


async def _probe_pg_primary(proc: Mapping[str, Any], secrets: Secrets) -> dict[str, Any]:
    """A plain PostgreSQL server of a tool (the benchmark's raw limits), not Patroni's;
    as the superuser, like the tool."""
    from bookcluster.stores.connections import pg_login

    recovery, lsn = await pg_position(proc["address"], pg_login(secrets, admin=True))
    return {"healthy": not recovery, "repl_offset": lsn}


async def _probe_pg_member(proc: Mapping[str, Any], secrets: Secrets) -> dict[str, Any]:
    """The member's own state, and what the cluster view adds (leader, lag)."""
    from bookcluster.stores import patroni_api

    row = read_patroni_member(await patroni_api.member_state(proc["api"]))
    try:
        view = await patroni_api.cluster_view(proc["api"])
    except patroni_api.PatroniError:
        return row
    return {**row, **read_patroni_cluster(view, proc["api"])}


async def _probe_etcd(proc: Mapping[str, Any], secrets: Secrets) -> dict[str, Any]:
    return read_etcd(*await _http(f"{proc['address']}/health"))


async def _probe_process(proc: Mapping[str, Any], secrets: Secrets) -> dict[str, Any]:
    return read_healthz(*await _http(f"{proc['address']}/healthz"))


PROBES: dict[str, Callable[[Mapping[str, Any], Secrets], Awaitable[dict[str, Any]]]] = {
    "redis-master": _probe_redis,
    "redis-replica": _probe_redis,
    "redis-sentinel": _probe_sentinel,
    "pg-primary": _probe_pg_primary,
    "pg-member": _probe_pg_member,
    "etcd": _probe_etcd,
    "node": _probe_process,
    "worker": _probe_process,
    "gateway": _probe_process,
    "wanproxy": _probe_process,
}


def _failures() -> tuple[type[BaseException], ...]:
    """What a probe that failed may raise: a library's errors only once it is imported
    (a probe imports only the clients its process needs)."""
    found: list[type[BaseException]] = [TimeoutError, OSError, ValueError]
    if (aiohttp := sys.modules.get("aiohttp")) is not None:
        found.append(aiohttp.ClientError)
    if (asyncpg := sys.modules.get("asyncpg")) is not None:
        found += [asyncpg.PostgresError, asyncpg.InterfaceError]
    if (patroni := sys.modules.get("bookcluster.stores.patroni_api")) is not None:
        found.append(patroni.PatroniError)
    return tuple(found)


async def probe(proc: Mapping[str, Any], secrets: Secrets) -> dict[str, Any]:
    """One process's row: `healthy` and what it says of itself, or `error`."""
    import asyncio

    try:
        return await asyncio.wait_for(PROBES[proc["role"]](proc, secrets), PROBE_TIMEOUT_S + 0.5)
    except Exception as exc:
        if not isinstance(exc, _failures()):
            raise
        return {"healthy": False, "error": f"{type(exc).__name__}: {exc}".strip()}


async def probe_all(processes: Iterable[dict[str, Any]],
                    secrets: Secrets) -> list[dict[str, Any]]:
    """Probe every process; replicas get `lag_bytes` against their source's offset."""
    import asyncio

    procs = list(processes)
    results = await asyncio.gather(*(probe(p, secrets) for p in procs))
    by_name = {p["name"]: r for p, r in zip(procs, results, strict=True)}
    out = []
    for proc, result in zip(procs, results, strict=True):
        row = {**proc, **result}
        source = _source_of(proc, result, procs)
        if source in by_name:
            lag = lag_bytes(by_name[source].get("repl_offset"), result.get("repl_offset"))
            if lag is not None:
                row["lag_bytes"] = lag
        out.append(row)
    return out


def _source_of(proc: Mapping[str, Any], result: Mapping[str, Any],
               procs: list[dict[str, Any]]) -> str | None:
    """The process a Redis replica's lag is measured against: the one at the address it
    follows, else (it dials a WAN proxy) its region's first master. PostgreSQL members
    get theirs from Patroni."""
    if result.get("redis_role") != "replica":
        return None
    found: str | None = next((p["name"] for p in procs
                              if f"{p['host']}:{p['port']}" == result.get("master")), None)
    if found is not None:
        return found
    return f"{proc.get('source') or proc['region']}.redis.master"


async def wait_healthy(proc: dict[str, Any], timeout_s: float, alive: Callable[[], bool],
                       secrets: Secrets,
                       accept: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
    """Poll a process until healthy (or its probe passes `accept`); fail early if it died.
    Raises TimeoutError."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout_s
    last: dict[str, Any] = {}
    while asyncio.get_running_loop().time() < deadline:
        if not alive():
            raise RuntimeError(f"{proc['name']} exited during start-up; see {proc['log_path']}")
        last = await probe(proc, secrets)
        if last.get("healthy") or (accept is not None and accept(last)):
            return last
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{proc['name']} not healthy after {timeout_s:.0f}s: "
                       f"{last.get('error') or last}; see {proc['log_path']}")


async def wait_leader(region: Region, timeout_s: float,
                      alive: Callable[[], bool]) -> dict[str, Any]:
    """Poll the region's Patroni members until one runs as the primary (a leader was
    elected, and bootstrapped if new). Returns its state; raises TimeoutError."""
    import asyncio

    import aiohttp

    from bookcluster.stores import patroni_api

    deadline = asyncio.get_running_loop().time() + timeout_s
    last: list[str] = []
    while asyncio.get_running_loop().time() < deadline:
        if not alive():
            raise RuntimeError(f"{region.name}: a PostgreSQL member exited during start-up; "
                               "see its log")
        last = []
        for api in patroni_api.api_urls(region):
            try:
                state = await patroni_api.member_state(api)
            except (TimeoutError, OSError, aiohttp.ClientError, patroni_api.PatroniError) as exc:
                last.append(f"{api}: {type(exc).__name__}")
                continue
            if state.get("role") == "primary" and state.get("state") == "running":
                return state
            last.append(f"{api}: {state.get('role')} {state.get('state')}")
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{region.name}: no PostgreSQL leader after {timeout_s:.0f}s "
                       f"({'; '.join(last)})")


# -- Asking, blocking: the container health check -------------------------------------------

def _http_blocking(url: str, path: str, timeout_s: float) -> tuple[int, Any]:
    import http.client  # not for a Redis check: 0.04 s of CPU

    host, _, port = url.removeprefix("http://").rstrip("/").rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
    except http.client.HTTPException as exc:  # a garbled answer: as good as none
        raise ConnectionError(f"{url}{path}: {type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()
    try:
        return resp.status, json.loads(body)
    except ValueError:
        return resp.status, None


def check(proc: Mapping[str, Any], secrets: Secrets, timeout_s: float = 3.0) -> dict[str, Any]:
    """The row `probe` would give for the process's health (not its details), asked
    without asyncio; raises OSError (a refusal or a garbled answer, too) or ValueError."""
    role = proc["role"]
    if role in ("redis-master", "redis-replica"):
        info = redis_ask_blocking(proc["host"], proc["port"], secrets.redis_password,
                                  "INFO", "replication", timeout_s=timeout_s)
        return read_replication(parse_info(str(info))).row()
    if role == "redis-sentinel":
        seen = read_sentinel_masters(redis_ask_blocking(
            proc["host"], proc["port"], secrets.redis_password, "SENTINEL", "MASTERS",
            timeout_s=timeout_s))
        return {"healthy": bool(seen), "sentinel_masters": seen}
    if role == "pg-member":
        status, body = _http_blocking(proc["api"], "/patroni", timeout_s)
        if not isinstance(body, dict):
            raise ValueError(f"{proc['api']}/patroni answered {status} without a state")
        return read_patroni_member(body)
    if role == "etcd":
        return read_etcd(*_http_blocking(proc["address"], "/health", timeout_s))
    if role in ("node", "worker", "gateway", "wanproxy"):
        return read_healthz(*_http_blocking(proc["address"], "/healthz", timeout_s))
    raise ValueError(f"no container check for a {role}")
