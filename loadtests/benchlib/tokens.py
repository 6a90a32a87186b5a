"""User tokens for the bench's writes, and what verifying one costs a node.

Every write of the bench carries a token of its own user (`mint`, the cluster's
HS256 key), and every hold is made by a fresh user, so the per-user caps (open
holds, seats per show) and the per-user write rate never refuse a bench request.

`verify_cost` times `TokenVerifier.identity()`, the call every booking request
pays on each node it passes (twice for a write forwarded to its home region):
microseconds per call, single-threaded, in this process. Also runnable alone:

    .venv/bin/python loadtests/benchlib/tokens.py [--topology FILE] [--calls N]

(a throwaway key in a temporary run folder when the topology's has none).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import timeit
from pathlib import Path
from typing import Any

import jwt

from bookcluster.errors import Unauthorized
from bookcluster.node.auth import TokenVerifier, mint
from bookcluster.topology.load import load_topology
from bookcluster.topology.model import Topology
from bookcluster.topology.secrets import SecretMissing, generate_local

TOKEN_TTL_S = 3600.0  # longer than any bench run
REPO_TOPOLOGY = Path(__file__).resolve().parents[2] / "topology.yaml"


def token_for(topology: Topology, user: str) -> str:
    return mint(topology, user, TOKEN_TTL_S)


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def verify_cost(topology: Topology, calls: int = 10_000, rounds: int = 5) -> dict[str, Any]:
    """µs per `identity()` of a valid token and of one with a bad signature (what a
    stranger's forged token costs), and per `mint`; median and best of `rounds`."""
    verifier = TokenVerifier(topology)
    token = token_for(topology, "bench-verify")
    valid = f"Bearer {token}"
    head, payload, signature = token.split(".")
    forged = f"Bearer {head}.{payload}.{signature[::-1]}"

    def refused() -> None:
        try:
            verifier.identity(forged)
        except Unauthorized:
            return
        raise AssertionError("a forged token was accepted")

    def accepted() -> None:  # a token seen for the first time: its signature is checked
        verifier.verify(token)

    def repeated() -> None:  # the same token again: remembered until it expires
        verifier.identity(valid)

    accepted()
    refused()
    out: dict[str, Any] = {"algorithm": topology.auth.algorithm,
                           "checks_iss_aud": bool(topology.auth.issuer or topology.auth.audience),
                           "calls": calls, "rounds": rounds, "pyjwt": jwt.__version__,
                           "token_bytes": len(token)}
    for name, call in (("identity", accepted), ("repeated", repeated),
                       ("bad_signature", refused),
                       ("mint", lambda: token_for(topology, "bench-verify"))):
        # timeit with the garbage collector left on, as in a node
        per_call = [t / calls * 1e6 for t in timeit.repeat(call, setup=gc.enable,
                                                             number=calls, repeat=rounds)]
        out[f"{name}_us"] = round(statistics.median(per_call), 2)
        out[f"{name}_us_best"] = round(min(per_call), 2)
    out["identity_per_core_per_s"] = round(1e6 / out["identity_us"])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topology", type=Path, default=REPO_TOPOLOGY,
                   help="whose auth settings and key (default: the repo's topology.yaml)")
    p.add_argument("--calls", type=int, default=20_000, help="calls per round (20000)")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    topology = load_topology(args.topology)
    with tempfile.TemporaryDirectory(prefix="bookcluster-tokens-") as tmp:
        try:
            topology.secrets.get("jwt_secret")
        except SecretMissing:
            generate_local(Path(tmp))
            topology = load_topology(args.topology, run_dir=Path(tmp))
        print(json.dumps(verify_cost(topology, args.calls, args.rounds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
