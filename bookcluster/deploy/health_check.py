"""A container's health check: cheap, from the standard library.

    python3 -m bookcluster.deploy.health_check RUN_DIR NAME      exit 0 if process NAME is healthy

An engine runs every container's check every few seconds; `bookcluster probe`
imports the whole CLI (aiohttp, asyncpg, redis-py: about a second of CPU), and
39 containers of three regions on one machine spent more than its two cores on
it. This check reads what `bookcluster run` recorded for the process
(`<run_dir>/probes/<name>.json`: role and addresses) and asks it the launcher's
question with a socket: a Redis master answers as master, a replica is linked to
its master (one of another region's master only answers: that host may be
down), a sentinel answers, etcd and a node say healthy, a PostgreSQL member
runs as primary or streams (Patroni's `GET /patroni`).
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
from pathlib import Path
from typing import Any

from bookcluster.topology.errors import RouterError
from bookcluster.topology.secrets import Secrets

TIMEOUT_S = 3.0


def probe_file(run_dir: Path, name: str) -> Path:
    return run_dir / "probes" / f"{name}.json"


def record(run_dir: Path, spec: dict[str, Any]) -> None:
    """What the check needs of a process about to run (by `bookcluster run`)."""
    path = probe_file(run_dir, spec["name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    keep = ("name", "region", "role", "host", "port", "address", "api", "source")
    path.write_text(json.dumps({k: spec.get(k) for k in keep}))


def _command(sock: socket.socket, reader: Any, *args: str) -> bytes:
    """One RESP command; returns the reply's payload (simple or bulk string)."""
    out = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    sock.sendall(out.encode())
    line = reader.readline()
    if line.startswith(b"$"):
        size = int(line[1:])
        return bytes(reader.read(size + 2)[:size]) if size >= 0 else b""
    if line.startswith(b"-"):
        raise ConnectionError(line.decode().strip())
    return bytes(line[1:].strip())


def _redis(proc: dict[str, Any], password: str) -> bool:
    with socket.create_connection((proc["host"], proc["port"]), TIMEOUT_S) as sock:
        reader = sock.makefile("rb")
        _command(sock, reader, "AUTH", password)
        if proc["role"] == "redis-sentinel":
            return _command(sock, reader, "PING") == b"PONG"
        info = _command(sock, reader, "INFO", "replication").decode()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    if fields.get("role") == "master":
        return True
    linked = fields.get("master_link_status") == "up"
    return linked or proc.get("source") != proc["region"]


def _http_json(url: str, path: str) -> tuple[int, Any]:
    host, _, port = url.removeprefix("http://").rstrip("/").rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(body)
    except ValueError:
        return resp.status, None


def healthy(proc: dict[str, Any], secrets: Secrets) -> bool:
    role = proc["role"]
    if role.startswith("redis-"):
        return _redis(proc, secrets.redis_password)
    if role == "etcd":
        status, body = _http_json(proc["address"], "/health")
        return status == 200 and isinstance(body, dict) and body.get("health") == "true"
    if role == "pg-member":
        _, body = _http_json(proc["api"], "/patroni")
        return isinstance(body, dict) and body.get("state") == "running" and (
            body.get("role") in ("primary", "master")
            or body.get("replication_state") == "streaming")
    status, _ = _http_json(proc["address"], "/healthz")  # node, worker, gateway
    return status == 200


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python3 -m bookcluster.deploy.health_check RUN_DIR NAME", file=sys.stderr)
        return 2
    run_dir, name = Path(args[0]), args[1]
    try:
        proc = json.loads(probe_file(run_dir, name).read_text())
        ok = healthy(proc, Secrets(run_dir))
    except (OSError, ValueError, RouterError) as exc:  # a missing secret, too
        print(f"unhealthy: {type(exc).__name__}: {exc}")
        return 1
    print("healthy" if ok else "unhealthy")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
