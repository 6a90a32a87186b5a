"""`bookcluster`: start, stop and inspect the local cluster.

    bookcluster up [--hold-ttl 5s]     check every port, start everything, print endpoints,
                                       run until Ctrl-C
    bookcluster up --region R          only region R's processes (one region per host)
    bookcluster up --stored-topology   start with the cluster's applied topology when the
                                       file is older (`topology pull` brings the file up)
    bookcluster down [--wipe]          stop it from another shell (keep data unless --wipe)
    bookcluster status [--json] [--wide]  every process, what it is now, health, lag
    (--region R on down and status: that region's launcher, that region's processes;
    --run-dir DIR before the command overrides the topology's settings.run_dir)
    bookcluster run NAME | probe NAME | setup --region R
                                       one process in the foreground, its health check,
                                       a region's one-off set-up: for containers (compose/)
    bookcluster deploy helm-values --region R
                                       the Helm chart's values of R's release (deploy/helm/)
    bookcluster failover --region R --store postgres [--to MEMBER] [--json]
                                       planned switchover of a region's primary (Patroni)
    bookcluster failover --region R --store redis [--json]
                                       planned switchover of a region's Redis master (Sentinel)
    bookcluster audit [--json]         no seat sold twice, every sale complete, Redis = PostgreSQL
    bookcluster jobs counts|failed|replay [--region R] [--json]   the region-local job queues
    bookcluster repair [--region R] [--show S] [--dry-run] [--json]
                                       fix Redis seat state from PostgreSQL
    bookcluster token --user alice [--user bob] [--ttl 1h] [--role operator]
                      [--role scanner --theatre ID...] [--json]
                                       a user token per --user, one line each
    bookcluster topology diff FILE [--json]           what FILE would change
    bookcluster topology apply FILE [--dry-run]       every node and worker takes FILE's epoch
    bookcluster topology pull [FILE]                  write the applied topology to FILE
    bookcluster topology move THEATRE --to REGION [--dry-run | --rollback] [--json]
                                       move a theatre while it sells (resumes an unfinished one)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bookcluster.topology.errors import RouterError

if TYPE_CHECKING:
    from bookcluster.ops.demo_catalog import CatalogSpec
    from bookcluster.topology.model import Topology

# Every command imports what it uses when it runs: `--help` and `status` import no
# launcher, no aiohttp application and no client library they do not use.
CATALOG_SIZES = ("full", "small")  # demo catalog sizes, see catalog_spec()
DEFAULT_TOPOLOGY = Path(__file__).resolve().parent.parent / "topology.yaml"
LOG_CHECK_TICKS = 10  # `up` checks its children's logs against the cap every 10 s


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bookcluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topology", type=Path, default=None,
                   help="topology file (default: ./topology.yaml, else the repo's)")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="run folder (default: the topology's settings.run_dir)")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the local cluster and keep it running")
    up.add_argument("--region", action="append", dest="regions",
                    help="start only this region's processes (repeatable; default: all)")
    up.add_argument("--hold-ttl", type=duration_arg, help="seat hold TTL, e.g. 5s (default: "
                    "settings.hold_ttl)")
    up.add_argument("--sweep-interval", type=duration_arg, help="expiry sweep interval, e.g. 1s")
    up.add_argument("--wan-delay", type=duration_arg, help="one-way delay on every cross-region "
                    "link through a TCP proxy, e.g. 40ms")
    up.add_argument("--catalog", choices=CATALOG_SIZES, default="full",
                    help="demo catalog size: full (21 theatres per region, 3 days) or small")
    up.add_argument("--stored-topology", action="store_true",
                    help="start with the topology the cluster has applied (kept in the run "
                    "folder) when the file is older, leaving the file as it is")
    down = sub.add_parser("down", help="stop a running local cluster")
    down.add_argument("--wipe", action="store_true", help="also delete the run folder (data)")
    down.add_argument("--region", help="stop the launcher of this region (refused if it "
                      "runs other regions too)")
    status = sub.add_parser("status", help="health and replication lag of every process")
    status.add_argument("--region", help="only this region's processes")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--wide", action="store_true", help="every column (the default fits "
                        "100 columns)")
    audit = sub.add_parser("audit", help="check the invariants across all regions; "
                           "non-zero exit on any violation")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    audit.add_argument("--grace", type=duration_arg, default=5.0,
                       help="slack for holds the sweeper has not reached yet (default 5s)")
    failover = sub.add_parser("failover", help="planned switchover: the region's standby "
                              "becomes its primary (its replica in the region its Redis "
                              "master), the old one follows it")
    failover.add_argument("--region", required=True)
    failover.add_argument("--store", required=True, choices=["postgres", "redis"])
    failover.add_argument("--to", dest="candidate",
                          help="postgres: the member to promote, e.g. north-2 (default: the "
                          "synchronous standby)")
    failover.add_argument("--json", action="store_true", help="machine-readable output")
    repair = sub.add_parser("repair", help="compare each region's Redis seat mirror with "
                            "PostgreSQL and fix what differs")
    repair.add_argument("--region", help="one region (default: all)")
    repair.add_argument("--show", type=int, help="one show (default: every show)")
    repair.add_argument("--dry-run", action="store_true", help="report, change nothing")
    repair.add_argument("--json", action="store_true", help="machine-readable output")
    token = sub.add_parser("token", help="print a user token (JWT) per --user, signed with "
                           "the local cluster's key")
    token.add_argument("--user", action="append", required=True, dest="users",
                       help="the token's sub; repeat for several (one line each, in order)")
    token.add_argument("--ttl", type=duration_arg, default=3600.0,
                       help="lifetime, e.g. 1h or 15m (default 1h)")
    token.add_argument("--role", action="append", default=[], dest="roles",
                       help="a role claim, e.g. operator or scanner; repeatable")
    token.add_argument("--theatre", action="append", default=[], dest="theatres",
                       help="a scanner token's theatre (where it checks tickets in); "
                       "repeatable")
    token.add_argument("--json", action="store_true", help="machine-readable output")
    topo = sub.add_parser("topology", help="change the running cluster's topology: diff, "
                          "apply, move a theatre")
    actions = topo.add_subparsers(dest="action", required=True)
    tdiff = actions.add_parser("diff", help="what FILE changes against the running cluster")
    tdiff.add_argument("file", type=Path)
    tdiff.add_argument("--json", action="store_true", help="machine-readable output")
    tapply = actions.add_parser("apply", help="apply FILE (epoch = current + 1) to every "
                                "running node and worker; rolled back if one cannot take it")
    tapply.add_argument("file", type=Path)
    tapply.add_argument("--dry-run", action="store_true", help="validate and say what it "
                        "would do, change nothing")
    tapply.add_argument("--json", action="store_true", help="machine-readable output")
    tpull = actions.add_parser("pull", help="write the cluster's applied topology to FILE "
                               "(default: the topology file)")
    tpull.add_argument("file", type=Path, nargs="?")
    tpull.add_argument("--json", action="store_true", help="machine-readable output")
    tmove = actions.add_parser("move", help="move a theatre to another region while it sells")
    tmove.add_argument("theatre")
    tmove.add_argument("--to", dest="target", help="the new home region")
    tmove.add_argument("--dry-run", action="store_true", help="say what would move, change "
                       "nothing")
    tmove.add_argument("--rollback", action="store_true", help="undo an unfinished move "
                       "that has not committed at its target")
    tmove.add_argument("--timeout", type=duration_arg, default=10.0,
                       help="give up (and roll back) if the freeze or copy takes longer "
                       "(default 10s)")
    tmove.add_argument("--json", action="store_true", help="machine-readable output (its "
                       "progress on stderr)")
    tmove.add_argument("--pause-after", choices=["frozen", "committed", "flipped"],
                       help=argparse.SUPPRESS)  # tests and drills: stop as if crashed there
    run = sub.add_parser("run", help="run one process of the topology in the foreground "
                         "(a container's command, see compose/)")
    run.add_argument("name", help="e.g. north.redis.master, north.postgres.1, north.node.1")
    probe = sub.add_parser("probe", help="exit 0 if process NAME is healthy (a container's "
                           "health check)")
    probe.add_argument("name")
    setup = sub.add_parser("setup", help="a region's one-off set-up: etcd login, database, "
                           "migrations, catalog seed (idempotent, safe to run at once)")
    setup.add_argument("--region", required=True)
    setup.add_argument("--catalog", choices=CATALOG_SIZES, default="full")
    deploy = sub.add_parser("deploy", help="files for running the cluster elsewhere: "
                            "helm-values (deploy/helm/bookcluster/)")
    deploy_actions = deploy.add_subparsers(dest="action", required=True)
    helm_values = deploy_actions.add_parser(
        "helm-values", help="the Helm chart's values of one region's release (stdout)")
    helm_values.add_argument("--region", required=True)
    helm_values.add_argument("--image", default="bookcluster",
                             help="the image built from compose/Dockerfile (default bookcluster)")
    helm_values.add_argument("--tag", default="latest", help="its tag (default latest)")
    jobs = sub.add_parser("jobs", help="region-local job queues: counts, dead letters, replay")
    jobs.add_argument("action", choices=["counts", "failed", "replay"])
    jobs.add_argument("job_ids", nargs="*", help="replay only these (default: all failed)")
    jobs.add_argument("--region", help="one region (default: all)")
    jobs.add_argument("--limit", type=int, default=100, help="how many failed jobs to list")
    jobs.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def duration_arg(text: str) -> float:
    """A duration flag (`5s`, `40ms`, `1h`): the topology's parser, imported when used."""
    from bookcluster.topology.model import duration_arg as parse

    return parse(text)


def catalog_spec(size: str) -> CatalogSpec:
    from bookcluster.ops.demo_catalog import CatalogSpec

    if size == "small":
        return CatalogSpec(theatres_per_city=1, cities_per_region=2, days=1, shows_per_day=2)
    return CatalogSpec()


def topology_path(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    local = Path.cwd() / "topology.yaml"
    return local if local.exists() else DEFAULT_TOPOLOGY


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        from bookcluster.topology.load import load_topology

        run_dir = args.run_dir.resolve() if args.run_dir is not None else None
        topology = load_topology(topology_path(args.topology), run_dir)
        code = _command(topology, args)
    except (RouterError, TimeoutError, RuntimeError, ValueError) as exc:  # and the launcher's
        print(f"error: {exc}", file=sys.stderr)  # errors, every one a RuntimeError
        code = 2
    except ConnectionError as exc:  # a store that does not answer: a stopped cluster, mostly
        print(f"error: {exc}\n(is the cluster running? `bookcluster status` says)",
              file=sys.stderr)
        code = 2
    sys.exit(code)


def _command(topology: Topology, args: argparse.Namespace) -> int:
    import asyncio

    if args.command == "up":
        return asyncio.run(_up(topology, args))
    if args.command == "down":
        return _down(topology, args.wipe, args.region)
    if args.command == "audit":
        from bookcluster.ops.audit import audit_command

        return asyncio.run(audit_command(topology, args.json, grace_s=args.grace))
    if args.command == "jobs":
        from bookcluster.ops.jobs import jobs_command

        return asyncio.run(jobs_command(topology, args.action, args.region, args.job_ids,
                                        args.limit, args.json))
    if args.command == "repair":
        return asyncio.run(_repair(topology, args))
    if args.command == "token":
        return _token(topology, args)
    if args.command == "topology":
        return asyncio.run(_topology(topology, args))
    if args.command in ("run", "probe", "setup"):
        from bookcluster.deploy import service

        if args.command == "run":
            service.run(topology, args.name)
            return 1  # not reached: run replaces this process
        if args.command == "probe":
            return asyncio.run(service.probe_command(topology, args.name))
        return service.setup(topology, args.region, catalog_spec(args.catalog))
    if args.command == "failover":
        return asyncio.run(_failover(topology, args))
    if args.command == "deploy":
        from bookcluster.deploy import helm

        if args.region not in topology.regions:
            print(f"error: no region {args.region!r} in {topology.path} (regions: "
                  f"{', '.join(topology.regions)})", file=sys.stderr)
            return 2
        print(helm.render(topology, args.region, topology.path.read_text(), image=args.image,
                          tag=args.tag), end="")
        return 0
    from bookcluster.local.supervisor import pid_alive
    from bookcluster.ops.status import status_command

    return asyncio.run(status_command(topology, args.json, args.region, pid_alive, args.wide))


async def _repair(topology: Topology, args: argparse.Namespace) -> int:
    """Operator repair: needs the stores' passwords (the run folder or env)."""
    from bookcluster.seats.home import HomeRegion
    from bookcluster.seats.reconcile import Reconciler
    from bookcluster.stores.connections import Connections
    from bookcluster.topology.errors import RegionUnavailable

    regions = [args.region] if args.region else list(topology.regions)
    found: dict[str, dict[str, object]] = {}
    unreachable: dict[str, str] = {}
    for region in regions:
        async with Connections(topology, region) as connections:
            reconciler = Reconciler(connections, HomeRegion(connections), region)
            try:
                shows = await reconciler.region_shows()
                if args.show is not None:
                    shows = [s for s in shows if s == args.show]
                report = await reconciler.repair(shows, dry_run=args.dry_run)
            except RegionUnavailable as exc:
                unreachable[region] = str(exc)
                if not args.json:
                    print(f"{region}: unreachable: {exc}", file=sys.stderr)
                continue
        found[region] = {"shows_checked": report.shows_checked,
                         "divergent_seats": report.divergent_seats,
                         "divergent": {str(show): {str(s): w for s, w in seats.items()}
                                       for show, seats in sorted(report.divergent.items())}}
        if args.json:
            continue
        verb = "would repair" if args.dry_run else "repaired"
        print(f"{region}: {report.shows_checked} shows checked, {verb} "
              f"{report.divergent_seats} seats in {len(report.divergent)} shows")
        for show, seats in sorted(report.divergent.items()):
            print(f"  show {show}: " + ", ".join(f"{s}->{w}" for s, w in sorted(seats.items())))
    if args.json:
        _print_json({"dry_run": args.dry_run, "regions": found, "unreachable": unreachable})
    return 2 if unreachable else 0


async def _topology(topology: Topology, args: argparse.Namespace) -> int:
    from bookcluster.ops import apply, moves

    if args.action == "diff":
        return await apply.diff_command(topology, args.file, args.json)
    if args.action == "apply":
        return await apply.apply_command(topology, args.file, args.dry_run, args.json)
    if args.action == "pull":
        from bookcluster.ops.applied import pull_command

        return await pull_command(topology, args.file, args.json)
    if not args.json:
        return await moves.move_command(topology, args.theatre, args.target,
                                        dry_run=args.dry_run, rollback=args.rollback,
                                        timeout_s=args.timeout, pause_after=args.pause_after)
    steps: list[str] = []

    def progress(line: str) -> None:  # stdout is the JSON's alone
        steps.append(line)
        print(f"[move] {line}", file=sys.stderr, flush=True)

    outcome: dict[str, object] = {"theatre": args.theatre, "to": args.target,
                                  "dry_run": args.dry_run, "rollback": args.rollback}
    try:
        code = await moves.move_command(topology, args.theatre, args.target,
                                        dry_run=args.dry_run, rollback=args.rollback,
                                        timeout_s=args.timeout, pause_after=args.pause_after,
                                        progress=progress)
    except moves.MoveFailed as exc:
        _print_json({**outcome, "ok": False, "error": str(exc), "steps": steps})
        return 2
    _print_json({**outcome, "ok": code == 0, "steps": steps})
    return code


async def _failover(topology: Topology, args: argparse.Namespace) -> int:
    """Operator switchover through Patroni's REST API (needs `patroni_password`) or the
    sentinels (needs `redis_password`). Writes to the region answer 503
    region_unavailable (Retry-After) for the few seconds it takes."""
    from bookcluster.stores import patroni_api

    if args.region not in topology.regions:
        print(f"error: unknown region {args.region!r} (known: {', '.join(topology.regions)})",
              file=sys.stderr)
        return 2
    if args.store == "redis":
        return await _redis_failover(topology, args)
    region = topology.region(args.region)
    try:
        before = patroni_api.leader(await patroni_api.any_cluster_view(region))
        answer = await patroni_api.switchover(region, topology.secrets, args.candidate)
        after = patroni_api.leader(await patroni_api.any_cluster_view(region))
    except patroni_api.PatroniError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        _print_json({"region": args.region, "store": "postgres", "answer": answer,
                     "leader_before": before["name"] if before else None,
                     "leader_after": after["name"] if after else None})
        return 0
    print(f"{args.region}: {answer}")
    print(f"{args.region}: leader {before['name'] if before else '-'} -> "
          f"{after['name'] if after else '- (electing)'}")
    return 0


def _print_json(document: object) -> None:
    import json

    print(json.dumps(document, indent=2))


async def _redis_failover(topology: Topology, args: argparse.Namespace) -> int:
    from bookcluster.stores import sentinel_api

    if args.candidate:
        print("error: --to is for postgres; Sentinel promotes the master's replica in its "
              "region", file=sys.stderr)
        return 2
    try:
        old, new = await sentinel_api.switchover(topology, args.region)
    except sentinel_api.SentinelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        _print_json({"region": args.region, "store": "redis",
                     "master_before": {"address": str(old),
                                       "server": sentinel_api.server_name(topology, old)},
                     "master_after": {"address": str(new),
                                      "server": sentinel_api.server_name(topology, new)}})
        return 0
    print(f"{args.region}: redis master {old} ({sentinel_api.server_name(topology, old)}) -> "
          f"{new} ({sentinel_api.server_name(topology, new)})")
    return 0


def _token(topology: Topology, args: argparse.Namespace) -> int:
    """Tokens only on stdout, one line per --user in order, so scripts can read them."""
    from bookcluster.node import auth

    tokens = [auth.mint(topology, user, args.ttl, tuple(args.roles), tuple(args.theatres))
              for user in args.users]
    if args.json:
        _print_json([{"user": user, "token": token, "ttl_s": args.ttl, "roles": args.roles,
                      "theatres": args.theatres} for user, token in zip(args.users, tokens,
                                                                         strict=True)])
        return 0
    print("\n".join(tokens))
    return 0


def _node_args(args: argparse.Namespace) -> list[str]:
    return ["--hold-ttl", f"{args.hold_ttl}s"] if args.hold_ttl is not None else []


def _worker_args(args: argparse.Namespace) -> list[str]:
    if args.sweep_interval is None:
        return []
    return ["--sweep-interval", f"{args.sweep_interval}s"]


def _ports_free(topology: Topology, regions: list[str] | None) -> None:
    """Busy ports refused in a second, before the launcher's code is even imported (the
    launcher checks again, after it killed what a dead launcher left). A running
    cluster's ports are its own: the launcher says that one is running."""
    from bookcluster.local import busy_ports
    from bookcluster.local.supervisor import pid_alive
    from bookcluster.topology.runstate import read_state

    state = read_state(topology.settings.run_dir)
    if state is None or not pid_alive(state["launcher_pid"]):
        busy_ports.check(topology, regions)


async def _up(topology: Topology, args: argparse.Namespace) -> int:
    import asyncio
    import signal

    _ports_free(topology, args.regions)
    from bookcluster.local.launcher import LocalCluster
    from bookcluster.ops.applied import check_not_older, stored_for_start
    from bookcluster.ops.status import print_table
    from bookcluster.stores.probe import probe_all

    if args.stored_topology:
        topology = stored_for_start(topology)
    else:
        check_not_older(topology)  # before anything starts
    wan_delay_ms = None if args.wan_delay is None else int(round(args.wan_delay * 1000))
    cluster = LocalCluster(topology, node_args=_node_args(args), worker_args=_worker_args(args),
                           wan_delay_ms=wan_delay_ms,
                           catalog=catalog_spec(args.catalog), regions=args.regions,
                           progress=lambda line: print(line, flush=True))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(cluster.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()  # start() stops whatever it had started
        await asyncio.gather(starting, return_exceptions=True)
        print("interrupted during start-up; everything stopped")
        return 130
    stopping.cancel()
    starting.result()
    print_table(await probe_all(cluster.processes(), topology.secrets))
    print(f"\nrun folder: {cluster.run_dir} (secrets in {cluster.run_dir / 'secrets'})\n"
          "a user token: `bookcluster token --user alice`\n"
          "stop with Ctrl-C or `bookcluster down`", flush=True)
    reported: set[str] = set()
    ticks = 0
    try:
        while not stop.is_set():
            for name in set(cluster.crashed()) - reported:
                print(f"warning: {name} exited: {cluster.why_exited(name)}", flush=True)
                reported.add(name)
            ticks += 1
            if ticks % LOG_CHECK_TICKS == 0:
                cluster.cap_logs()
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
    finally:
        began = time.monotonic()
        print("stopping...", flush=True)
        cluster.stop()
        print(f"stopped in {time.monotonic() - began:.1f}s: no process left", flush=True)
    return 0


def _down(topology: Topology, wipe: bool, region: str | None = None) -> int:
    import os
    import shutil
    import signal

    from bookcluster.local.supervisor import kill_recorded, pid_alive, wait_stopped
    from bookcluster.ops.status import launcher_regions
    from bookcluster.topology.runstate import read_state

    run_dir = topology.settings.run_dir
    state = read_state(run_dir)
    runs = launcher_regions(topology, state)
    if state is not None and region is not None and runs != [region]:
        print(f"error: the launcher of {run_dir} runs {', '.join(runs)}, not only {region}: "
              "`bookcluster down` (without --region) stops it", file=sys.stderr)
        return 2
    if state is None:
        print(f"nothing running from {run_dir}")
    elif pid_alive(state["launcher_pid"]):
        pid = state["launcher_pid"]
        print(f"asking launcher pid {pid} to stop...", flush=True)
        began = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        wait_stopped(state["processes"], 60, lambda line: print(line, flush=True))
        deadline = time.monotonic() + 5  # it removes its state file, then exits
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            print(f"launcher {pid} still running after 60s; killing its processes")
        stopped = kill_recorded(run_dir)  # whatever it could not stop
        print(f"stopped in {time.monotonic() - began:.1f}s"
              f"{f' ({stopped} left by the launcher)' if stopped else ''}")
    else:
        stopped = kill_recorded(run_dir)
        print(f"launcher was gone; stopped {stopped} leftover processes")
    if wipe:
        shutil.rmtree(run_dir, ignore_errors=True)
        print(f"wiped {run_dir}")
    return 0
