"""Token verification (HS256 and an identity provider's ES256), the token command,
the per-address read limit, and the gateway's merchant key."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import jwt
import pytest

from bookcluster.errors import Unauthorized
from bookcluster.node.auth import TokenVerifier, mint
from bookcluster.topology.load import parse_topology
from bookcluster.topology.model import Topology
from tests.integration.conftest import Cluster
from tests.integration.support import merchant, topology_yaml

REPO = Path(__file__).resolve().parents[3]


def topology_with(tmp_path: Path, auth: str) -> Topology:
    text = topology_yaml(tmp_path / "run", regions=("north",), nodes=1) + auth
    return parse_topology(text, tmp_path / "topology.yaml")


def test_hs256_tokens_need_sub_exp_and_the_configured_audience(cluster: Cluster) -> None:
    topology = cluster.topology
    verifier = TokenVerifier(topology)
    assert verifier.identity(f"Bearer {mint(topology, 'bob', 60)}").user == "bob"
    key = topology.secrets.get("jwt_secret")
    for claims in ({"exp": int(time.time()) + 60}, {"sub": "bob"},
                   {"sub": "bad user id!", "exp": int(time.time()) + 60},
                   {"sub": "bob", "exp": int(time.time()) + 60, "roles": "operator"}):
        with pytest.raises(Unauthorized):
            verifier.identity("Bearer " + jwt.encode(claims, key, algorithm="HS256"))


def test_the_token_command_prints_one_token_per_user_in_order(cluster: Cluster) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bookcluster", "--topology", str(cluster.topology.path), "token",
         "--user", "alice", "--user", "bob", "--ttl", "10m", "--role", "operator"],
        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    verifier = TokenVerifier(cluster.topology)
    assert [verifier.identity(f"Bearer {t}").user for t in lines] == ["alice", "bob"]
    assert all(verifier.identity(f"Bearer {t}").roles == {"operator"} for t in lines)


async def test_the_gateway_needs_the_merchant_key(cluster: Cluster,
                                                  http: aiohttp.ClientSession) -> None:
    assert cluster.topology.payments is not None
    url = f"http://{cluster.topology.payments.gateway}/intents"
    body = {"booking_id": "b1-0123456789abcdef", "amount_paise": 100, "region": "north"}
    for headers in ({}, {"Authorization": "Bearer wrong-key"}):
        async with http.post(url, json=body, headers=headers) as resp:
            assert resp.status == 401
    async with http.post(url, json={**body, "amount_paise": 0}, headers=merchant()) as resp:
        assert resp.status == 422
