"""`bookcluster jobs counts|failed|replay`: each region's job queue (its outbox in the
region's PostgreSQL primary), as a table or, with `--json`, as one JSON document:
`{"regions": {region: {...}}, "unreachable": {region: error}}`."""

from __future__ import annotations

import json
import sys
from typing import Any

import asyncpg

from bookcluster.ops.table import render
from bookcluster.stores import jobqueue
from bookcluster.stores.connections import connect_primary
from bookcluster.topology.model import Topology


async def region_report(conn: asyncpg.Connection, action: str, job_ids: list[str],
                        limit: int) -> dict[str, Any]:
    if action == "counts":
        return await jobqueue.counts(conn)
    if action == "failed":
        return {"failed": await jobqueue.dead_letters(conn, limit)}
    return {"replayed": await jobqueue.replay(conn, job_ids or None)}


def text(action: str, regions: dict[str, dict[str, Any]]) -> str:
    if action == "counts":
        states = list(jobqueue.COUNT_STATES)
        return render(["REGION", *(s.upper() for s in states)],
                      [[name, *(found[s] for s in states)] for name, found in regions.items()],
                      numeric=[False, *(True for _ in states)])
    if action == "replay":
        return "\n".join(f"{name}: replayed {found['replayed']} job(s)"
                         for name, found in regions.items())
    rows = [[name, job["id"], job["kind"], job["attempts"], job["reason"] or "",
             json.dumps(job["data"])]
            for name, found in regions.items() for job in found["failed"]]
    total = sum(len(found["failed"]) for found in regions.values())
    summary = ", ".join(f"{name} {len(found['failed'])}" for name, found in regions.items())
    head = f"{total} dead-lettered job(s): {summary}" if regions else "no region answered"
    if not rows:
        return head
    return head + "\n\n" + render(["REGION", "JOB", "KIND", "ATTEMPTS", "REASON", "DATA"], rows,
                                  numeric=[False, False, False, True, False, False])


async def jobs_command(topology: Topology, action: str, region: str | None,
                       job_ids: list[str], limit: int, as_json: bool) -> int:
    names = [region] if region else list(topology.regions)
    found: dict[str, dict[str, Any]] = {}
    unreachable: dict[str, str] = {}
    for name in names:
        try:
            conn = await connect_primary(topology.region(name).pg_members, topology.secrets,
                                         timeout=5)
        except (OSError, asyncpg.PostgresError) as exc:
            unreachable[name] = str(exc)
            continue
        try:
            found[name] = await region_report(conn, action, job_ids, limit)
        except (OSError, asyncpg.PostgresError) as exc:
            unreachable[name] = str(exc)
        finally:
            await conn.close()
    if as_json:
        print(json.dumps({"regions": found, "unreachable": unreachable}, indent=2))
    else:
        if found:
            print(text(action, found))
        for name, error in unreachable.items():
            print(f"{name}: queue unreachable: {error}", file=sys.stderr)
    return 2 if unreachable else 0
