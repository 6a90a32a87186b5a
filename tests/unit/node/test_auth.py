"""Token verification with an identity provider's ES256 key, auth settings, and the
per-address read limit: no server (moved from tests/integration/node/test_auth.py)."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bookcluster.booking.limits import RateLimiter
from bookcluster.errors import RateLimited, Unauthorized
from bookcluster.metrics import NodeMetrics
from bookcluster.node.auth import TokenVerifier, mint
from bookcluster.topology.errors import TopologyError
from bookcluster.topology.load import parse_topology
from bookcluster.topology.model import Limits, Rate, Topology
from tests.integration.support import topology_yaml


def topology_with(tmp_path: Path, auth: str) -> Topology:
    text = topology_yaml(tmp_path / "run", regions=("north",), nodes=1) + auth
    return parse_topology(text, tmp_path / "topology.yaml")


def test_an_identity_providers_es256_tokens_are_verified_with_its_public_key(
        tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "idp.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    topology = topology_with(tmp_path, "auth:\n  algorithm: ES256\n  public_key_file: idp.pem\n"
                                       "  issuer: https://idp.example\n  audience: bookcluster\n")
    verifier = TokenVerifier(topology)
    claims = {"sub": "alice", "exp": int(time.time()) + 60, "iss": "https://idp.example",
              "aud": "bookcluster", "roles": ["operator"]}
    caller = verifier.identity("Bearer " + jwt.encode(claims, key, algorithm="ES256"))
    assert caller.user == "alice" and caller.roles == {"operator"}
    for wrong in ({"aud": "someone-else"}, {"iss": "https://evil.example"},
                  {"exp": int(time.time()) - 60}):
        with pytest.raises(Unauthorized):
            verifier.identity("Bearer " + jwt.encode({**claims, **wrong}, key, algorithm="ES256"))
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(Unauthorized):
        verifier.identity("Bearer " + jwt.encode(claims, other, algorithm="ES256"))
    # With ES256 configured, an HS256 token is refused whatever its key (no algorithm switch).
    with pytest.raises(Unauthorized):
        verifier.identity("Bearer " + jwt.encode(claims, "x" * 40, algorithm="HS256"))
    with pytest.raises(ValueError, match="identity provider"):
        mint(topology, "alice", 60)


def test_auth_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="public key"):
        topology_with(tmp_path, "auth:\n  algorithm: RS256\n")
    with pytest.raises(TopologyError, match="do not belong"):
        topology_with(tmp_path, "auth:\n  secret: hunter2hunter2hunter2\n")
    with pytest.raises(TopologyError, match="HS256, RS256 or ES256"):
        topology_with(tmp_path, "auth:\n  algorithm: none\n")


def test_reads_are_limited_per_address_in_the_nodes_memory() -> None:
    limiter = RateLimiter(None, Limits(ip_reads=Rate(per_s=2.0, burst=5)),  # type: ignore[arg-type]
                          NodeMetrics("north"))
    for _ in range(5):
        limiter.check_read("10.0.0.1")
    with pytest.raises(RateLimited) as refused:
        limiter.check_read("10.0.0.1")
    assert refused.value.headers == {"Retry-After": "1"} and refused.value.status == 429
    limiter.check_read("10.0.0.2")  # another address has its own bucket
    time.sleep(0.6)
    limiter.check_read("10.0.0.1")  # a token came back
