"""A topology of whole regions on free loopback ports, for tests and benchmarks
that start their own cluster next to anything already running."""

from __future__ import annotations

from pathlib import Path

from bookcluster.local.ports import free_ports

REGIONS = ("north", "south", "west")
# Every client of a loopback cluster (tests, load tests, the benchmark) is 127.0.0.1:
# the per-address hold caps and refusals, and the per-user read rate, would measure the
# load generator, not the cluster. Lifted here unless the caller's `limits` names them.
LOOPBACK_LIMITS = {
    "seats_per_show_per_address": "1000000",
    "holds_per_address": "1000000",
    "user_reads": "{per_second: 100000, burst: 100000}",
    "ip_rejects": "{per_second: 100000, burst: 100000}",
}


def topology_yaml(run_dir: Path, *, regions: tuple[str, ...] = REGIONS, nodes: int = 2,
                  standby: tuple[str, ...] = (), theatres: dict[str, str] | None = None,
                  extra_settings: str = "", workers: bool = False, durable: bool = False,
                  payments: bool = False, limits: str = "", auth: str = "",
                  sentinels: bool = True, redis_down_after: str = "30s") -> str:
    """YAML for `regions`, each with a master, a replica of every master, a Sentinel
    (unless not `sentinels`), a primary (a standby too if listed in `standby`) under
    Patroni, `nodes` app nodes, and a worker if `workers`; a payments section (gateway
    simulator) if `payments`; `limits` and `auth` are YAML put under `limits:` and `auth:`.

    `redis_down_after` is long by default: tests pause and kill masters on purpose and
    expect to find them where they were (a failover in the middle of one would change
    what it tests); failover tests ask for a short one."""
    per_region = 1 + len(regions) + 2 + nodes + (1 if standby else 0) + 1 + 5
    ports = iter(free_ports(per_region * len(regions) + 1))
    out = [f"epoch: 1\nsettings:\n  run_dir: {run_dir}\n  durable: {str(durable).lower()}\n"
           f"  redis_down_after: {redis_down_after}\n{extra_settings}", "regions:"]
    for region in regions:
        out.append(f"  {region}:\n    redis:\n      master: 127.0.0.1:{next(ports)}\n"
                   "      replicas:")
        out += [f"        {src}: 127.0.0.1:{next(ports)}" for src in regions]
        if sentinels:
            out.append(f"      sentinel: 127.0.0.1:{next(ports)}")
        out.append(f"    postgres:\n      primary: 127.0.0.1:{next(ports)}")
        members = 2 if region in standby else 1
        if members == 2:
            out.append(f"      standby: 127.0.0.1:{next(ports)}")
        # Patroni: a REST API per member; its DCS, the region's etcd: client, peer.
        api = [f"127.0.0.1:{next(ports)}" for _ in range(members)]
        etcd = [f"127.0.0.1:{next(ports)}" for _ in range(2)]
        out.append(f"      patroni: [{', '.join(api)}]\n      etcd: [{', '.join(etcd)}]")
        out.append("    nodes: [" + ", ".join(f"127.0.0.1:{next(ports)}"
                                               for _ in range(nodes)) + "]")
        if workers:
            out.append(f"    worker: 127.0.0.1:{next(ports)}")
    if payments:
        out.append(f"payments:\n  gateway: 127.0.0.1:{next(ports)}\n  capture_delay: 300ms")
    lifted = [f"  {key}: {value}" for key, value in LOOPBACK_LIMITS.items()
              if f"{key}:" not in limits]
    out.append("\n".join(["limits:", *([limits.rstrip()] if limits else []), *lifted]))
    if auth:
        out.append("auth:\n" + auth.rstrip())
    if theatres:
        out.append("theatres:")
        out += [f"  {t}: {r}" for t, r in sorted(theatres.items())]
    return "\n".join(out) + "\n"
