"""Patroni's REST API (loopback): a member's own state, the cluster as it sees it,
and the operator's actions (switchover, dynamic configuration).

Reads are open; actions need the `patroni_password` secret (basic auth).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp

from bookcluster.topology.model import Region
from bookcluster.topology.secrets import Secrets

TIMEOUT_S = 2.0
# A switchover waits for the candidate's promotion: about a loop or two.
SWITCHOVER_TIMEOUT_S = 30.0

API_USER = "patroni"  # REST API user for unsafe methods (switchover, config); GETs are open


class PatroniError(RuntimeError):
    pass


def api_urls(region: Region) -> list[str]:
    return [f"http://{ep}" for ep in region.pg_api]


async def _request(method: str, url: str, *, secrets: Secrets | None = None,
                   body: Any = None, timeout_s: float = TIMEOUT_S) -> tuple[int, Any]:
    """(status, JSON body or text): Patroni answers some actions in plain text."""
    # Basic auth by hand: aiohttp 3.14 deprecates BasicAuth (a warning is an error in tests).
    headers = {}
    if secrets:
        pair = f"{API_USER}:{secrets.get('patroni_password')}".encode()
        headers["Authorization"] = f"Basic {base64.b64encode(pair).decode()}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        async with session.request(method, url, json=body, headers=headers) as resp:
            text = await resp.text()
    try:
        return resp.status, json.loads(text)
    except ValueError:
        return resp.status, text


async def member_state(api: str) -> dict[str, Any]:
    """GET /patroni: this member's own view (role, state, timeline, WAL positions).
    Patroni answers 503 for a member whose PostgreSQL is not running, with the body."""
    _, body = await _request("GET", f"{api}/patroni")
    if not isinstance(body, dict):
        raise PatroniError(f"{api}/patroni: {body!r}")
    return body


async def cluster_view(api: str) -> dict[str, Any]:
    """GET /cluster: every member with role, state, timeline and lag, from this member's
    copy of the DCS."""
    status, body = await _request("GET", f"{api}/cluster")
    if status != 200 or not isinstance(body, dict):
        raise PatroniError(f"{api}/cluster: HTTP {status}: {body!r}")
    return body


async def any_cluster_view(region: Region) -> dict[str, Any]:
    """The cluster view of the first member that answers."""
    errors = []
    for api in api_urls(region):
        try:
            return await cluster_view(api)
        except (TimeoutError, OSError, aiohttp.ClientError, PatroniError) as exc:
            errors.append(f"{api}: {type(exc).__name__} {exc}")
    raise PatroniError(f"{region.name}: no Patroni member answers ({'; '.join(errors)})")


def leader(view: dict[str, Any]) -> dict[str, Any] | None:
    return next((m for m in view.get("members", []) if m.get("role") == "leader"), None)


async def switchover(region: Region, secrets: Secrets,
                     candidate: str | None = None) -> str:
    """Planned switchover to `candidate` (default: Patroni picks the synchronous standby).
    Returns Patroni's answer; raises PatroniError when it refuses."""
    view = await any_cluster_view(region)
    current = leader(view)
    if current is None:
        raise PatroniError(f"{region.name}: no leader now; nothing to switch over from")
    body: dict[str, Any] = {"leader": current["name"]}
    if candidate:
        body["candidate"] = candidate
    errors = []
    for api in api_urls(region):
        try:
            status, answer = await _request("POST", f"{api}/switchover", secrets=secrets,
                                            body=body, timeout_s=SWITCHOVER_TIMEOUT_S)
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            errors.append(f"{api}: {type(exc).__name__} {exc}")
            continue
        if status != 200:
            raise PatroniError(f"{region.name}: switchover refused (HTTP {status}): {answer}")
        return str(answer)
    raise PatroniError(f"{region.name}: no Patroni member answers ({'; '.join(errors)})")


async def set_synchronous(region: Region, secrets: Secrets, on: bool,
                          strict: bool | None = None) -> None:
    """Turn synchronous replication on or off, and strict or not (`None`: as it is)
    (dynamic configuration, PATCH /config); the members apply it within a loop."""
    body: dict[str, Any] = {"synchronous_mode": on}
    if strict is not None:
        body["synchronous_mode_strict"] = strict
    errors = []
    for api in api_urls(region):
        try:
            status, answer = await _request("PATCH", f"{api}/config", secrets=secrets,
                                            body=body)
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            errors.append(f"{api}: {type(exc).__name__} {exc}")
            continue
        if status != 200:
            raise PatroniError(f"{region.name}: PATCH /config refused (HTTP {status}): {answer}")
        return
    raise PatroniError(f"{region.name}: no Patroni member answers ({'; '.join(errors)})")
