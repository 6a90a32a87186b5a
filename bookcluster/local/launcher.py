"""The local cluster: every process of a topology on this machine, started in order.

Order: Redis masters, Redis replicas (replicaof), the Redis sentinels (which
watch the masters from then on), each region's PostgreSQL members under Patroni
(all at once: the first bootstraps, the others clone it; migrations run on the
leader once it is elected), the catalog seed, then app nodes. Each step waits
until its processes are healthy. Data lives under the topology's run folder;
stopping keeps it unless asked to wipe.

With `regions`, only those regions' processes start (`bookcluster up --region R`:
one region per host, each host reading the same topology). A region's host runs
its master, the replicas hosted in it (of every region's master: one whose master
is on a host not up yet links up later, so it is waited for only to answer), its
sentinel, etcd and PostgreSQL members, nodes, worker, and with a WAN delay its own
proxy for its outgoing cross-region links. The payment gateway simulator runs on
the host of the topology's first region. Database creation, migrations and the
catalog seed run under a session advisory lock on the region's primary
(`bookcluster.ops.region_setup`), so launchers of one region starting at once do them once.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from bookcluster.local import (
    busy_ports,
    etcd,
    logs,
    patroni,
    postgres_server,
    redis_server,
    sentinel,
    wan,
)
from bookcluster.local.binaries import Binaries, find_binaries
from bookcluster.local.supervisor import Child, ProcessSpec, Supervisor, kill_recorded, pid_alive
from bookcluster.node.settings import is_loopback
from bookcluster.ops import region_setup
from bookcluster.ops.demo_catalog import CatalogSpec, build_catalog
from bookcluster.ops.seed import seed_cluster
from bookcluster.stores.probe import wait_healthy, wait_leader
from bookcluster.topology import secrets as cluster_secrets
from bookcluster.topology.model import Endpoint, Region, Topology
from bookcluster.topology.runstate import read_state

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0


class ClusterAlreadyRunning(RuntimeError):
    pass


class ClusterSetupError(RuntimeError):
    pass


class ChildExited(ClusterSetupError):
    """A child died while starting; the message carries its log's last error line."""


def python_service(topology: Topology, name: str, region: str, role: str, ep: Endpoint,
                   module: str, args: Sequence[str]) -> ProcessSpec:
    """One of our own Python processes (node, worker, gateway) serving HTTP at `ep`."""
    argv = [sys.executable, "-m", module, "--topology", str(topology.path),
            "--run-dir", str(topology.settings.run_dir), *args]
    return ProcessSpec(
        name=name, region=region, role=role, host=ep.host, port=ep.port, argv=tuple(argv),
        log_path=topology.settings.run_dir / "logs" / f"{name}.log",
        address=f"http://{ep.host}:{ep.port}", env={"PYTHONPATH": str(REPO_ROOT)})


def node_spec(topology: Topology, region: Region, index: int, node_args: Sequence[str],
              endpoint: Endpoint | None = None) -> ProcessSpec:
    """A node of `region`: the topology's nodes[index], or an extra one at `endpoint`."""
    ep = endpoint or region.nodes[index]
    return python_service(topology, f"{region.name}.node.{index + 1}", region.name, "node", ep,
                          "bookcluster.node", ["--region", region.name, "--host", ep.host,
                                          "--port", str(ep.port), *node_args])


def worker_spec(topology: Topology, region: Region, worker_args: Sequence[str],
                endpoint: Endpoint | None = None, index: int = 0) -> ProcessSpec:
    ep = endpoint or region.worker
    assert ep is not None
    name = f"{region.name}.worker" + (f".{index + 1}" if index else "")
    return python_service(topology, name, region.name, "worker", ep, "bookcluster.worker.main",
                          ["--region", region.name, "--host", ep.host, "--port", str(ep.port),
                           *worker_args])


def gateway_spec(topology: Topology) -> ProcessSpec:
    assert topology.payments is not None
    return python_service(topology, "payments.gateway", "-", "gateway",
                          topology.payments.gateway, "bookcluster.devsim.payment_gateway", [])


def all_loopback(topology: Topology) -> bool:
    """Whether every node of the topology binds loopback: then the local cluster's nodes
    serve development sign-in (`bookcluster.node.settings`)."""
    return all(is_loopback(ep.host) for r in topology.regions.values() for ep in r.nodes)


class LocalCluster:
    """Owner of every process of a local cluster. Use `async with` or start()/stop()."""

    def __init__(
        self,
        topology: Topology,
        *,
        binaries: Binaries | None = None,
        catalog: CatalogSpec | None = None,
        node_args: Sequence[str] = (),
        worker_args: Sequence[str] = (),
        wan_delay_ms: int | None = None,
        progress: Callable[[str], None] = print,
        regions: Sequence[str] | None = None,
    ) -> None:
        self.topology = topology
        unknown = sorted(set(regions or ()) - set(topology.regions))
        if unknown:
            raise ClusterSetupError(f"unknown region(s) {', '.join(unknown)} "
                                    f"(known: {', '.join(topology.regions)})")
        # None: the whole cluster (every region on this machine, the default).
        self.only = list(regions) if regions else None
        self.binaries = binaries or find_binaries()
        self.catalog_spec = catalog or CatalogSpec()
        self.node_args = list(node_args)
        if all_loopback(topology) and "--dev-sign-in" not in self.node_args:
            self.node_args.append("--dev-sign-in")  # the web page's sign-in, this machine only
        self.worker_args = list(worker_args)
        self.wan_delay_ms = wan_delay_ms
        self.wan: wan.WanPlan | None = None
        self.progress = progress
        self.run_dir = topology.settings.run_dir
        self.supervisor = Supervisor(self.run_dir)
        self._stopped: dict[str, ProcessSpec] = {}
        self.pg_user = postgres_server.pg_os_user()

    @property
    def local_regions(self) -> list[Region]:
        """The regions this launcher runs, in topology order."""
        return [r for r in self.topology.regions.values()
                if self.only is None or r.name in self.only]

    def _runs_gateway(self) -> bool:
        return busy_ports.runs_gateway(self.topology, self.only)

    async def start(self) -> LocalCluster:
        killed = self._claim_run_dir()
        # Every port this launcher will bind, free before anything starts.
        busy_ports.check(self.topology, self.only,
                         busy_ports.RECHECKS_AFTER_KILL if killed else 0)
        started = time.monotonic()
        try:
            await self._step("redis", self._start_redis())
            await self._step("postgres", self._start_postgres())
            await self._step("catalog", self._seed())
            await self._step("nodes", self._start_nodes())
            await self._step("workers", self._start_workers())
        except BaseException:
            self.progress("start-up failed; stopping what was started")
            self.stop()
            raise
        self.progress(f"cluster up in {time.monotonic() - started:.1f}s")
        return self

    def stop(self, wipe: bool = False) -> None:
        """Stop every process; the progress callback hears of each region as it is done."""
        took = self.supervisor.stop(progress=self.progress)
        if took:
            self.progress("  by tier: " + ", ".join(f"{tier} {s:.1f}s" for tier, s in took.items()))
        if wipe:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def processes(self) -> list[dict[str, Any]]:
        state = read_state(self.run_dir)
        return list(state["processes"]) if state else []

    async def _start_workers(self) -> None:
        specs = [worker_spec(self.topology, r, self.worker_args)
                 for r in self.local_regions if r.worker is not None]
        if self._runs_gateway():
            specs.append(gateway_spec(self.topology))
        await self._start_and_wait(specs)

    async def start_extra_worker(self, region: str, endpoint: Endpoint,
                                 worker_args: Sequence[str] = ()) -> Child:
        """Another worker of `region` (e.g. to kill it mid-job), owned like the rest."""
        index = len([c for c in self.supervisor.children
                     if c.spec.role == "worker" and c.spec.region == region])
        child = self.supervisor.start(worker_spec(
            self.topology, self.topology.region(region), [*self.worker_args, *worker_args],
            endpoint, index))
        await self._wait(child)
        return child

    async def start_extra_node(self, region: str, endpoint: Endpoint,
                               node_args: Sequence[str]) -> Child:
        """A node outside the topology's list (e.g. with another hold TTL), owned like the rest."""
        if "--dev-sign-in" in self.node_args and is_loopback(endpoint.host):
            node_args = [*node_args, "--dev-sign-in"]  # as the topology's nodes
        index = len([c for c in self.supervisor.children
                     if c.spec.role == "node" and c.spec.region == region])
        child = self.supervisor.start(node_spec(
            self.topology, self.topology.region(region), index, node_args, endpoint))
        await self._wait(child)
        return child

    async def add_region(self, topology: Topology, name: str) -> None:
        """Start the region `name` that `topology` (the running one's next epoch) adds:
        its Redis master, its replicas of every master and every region's replica of it,
        its sentinel if it has one (and every running sentinel watches its master),
        its PostgreSQL (migrated; the catalog copied, no seats: `bookcluster/ops/seed.py`), nodes
        and worker. The running processes take it with `bookcluster topology apply`;
        theatres come to it by `topology move`."""
        self.topology = topology
        region, binary = topology.region(name), self.binaries.redis_server
        await self._start_and_wait([redis_server.master_spec(binary, topology, region)])
        await self._start_and_wait(
            [redis_server.replica_spec(binary, topology, r, src, self._dial(r.name, src))
             for r in topology.regions.values() for src in r.redis_replicas
             if name in (r.name, src)])
        if region.redis_sentinel is not None:
            await self._start_and_wait([sentinel.sentinel_spec(binary, topology, region)])
        # The running sentinels were configured before this region existed: without this
        # no client that asks Sentinel finds its master, and nothing fails it over.
        await sentinel.watch(topology, name)
        patroni.prepare(self.binaries, topology, region, self.pg_user)
        await self._start_region_postgres(region)
        catalog = build_catalog(self.catalog_spec, topology.settings.catalog_day_one())
        await seed_cluster(topology, catalog, self.progress, record_topology=False)
        await self._start_and_wait(
            [node_spec(topology, region, i, self.node_args) for i in range(len(region.nodes))]
            + ([worker_spec(topology, region, self.worker_args)] if region.worker else []))

    async def restart(self, name: str) -> Child:
        """Start a process again after it died (or was killed), with the same spec."""
        old = self.child(name)
        self.supervisor.stop_child(old)
        child = self.supervisor.start(old.spec)
        await self._wait(child)
        return child

    def stop_child(self, name: str) -> None:
        child = self.child(name)
        self.supervisor.stop_child(child)
        self._stopped[name] = child.spec

    async def restart_stopped(self, name: str) -> Child:
        """Start again a process that `stop_child` stopped."""
        child = self.supervisor.start(self._stopped.pop(name))
        await self._wait(child)
        return child

    def child(self, name: str) -> Child:
        return next(c for c in self.supervisor.children if c.spec.name == name)

    def crashed(self) -> list[str]:
        return [c.spec.name for c in self.supervisor.crashed()]

    def why_exited(self, name: str) -> str:
        """The last error line of a child's log, and the log's path."""
        return logs.why_it_died(self.child(name).spec.log_path)

    def cap_logs(self) -> list[Path]:
        """Rotate in place the logs past the cap (`bookcluster.local.logs`)."""
        return logs.cap(self.run_dir / "logs")

    async def __aenter__(self) -> LocalCluster:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.stop()

    # -- steps -------------------------------------------------------------

    def _claim_run_dir(self) -> int:
        """Returns how many processes a dead launcher had left (now killed)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o755)  # PostgreSQL's user must reach its data dirs
        state = read_state(self.run_dir)
        if state and pid_alive(state["launcher_pid"]):
            raise ClusterAlreadyRunning(
                f"a cluster is already running from {self.run_dir} "
                f"(launcher pid {state['launcher_pid']}); run `bookcluster down` first")
        killed = 0
        if state:  # a launcher died without cleaning up: finish its job
            killed = kill_recorded(self.run_dir)
            if killed:
                self.progress(f"stopped {killed} processes left by a dead launcher")
        self._ensure_secrets()
        logs.rotate_at_start(self.run_dir / "logs")
        self.supervisor.meta = {"topology": str(self.topology.path),
                                "run_dir": str(self.run_dir), "started_at": time.time(),
                                "regions": [r.name for r in self.local_regions]}
        return killed

    def _ensure_secrets(self) -> None:
        """Generate the local cluster's passwords and keys once per run folder. Data made
        before passwords existed cannot be logged in to with new ones: say so."""
        if any(self.run_dir.glob("*/pg-primary/PG_VERSION")):
            raise ClusterSetupError(
                f"{self.run_dir} holds PostgreSQL data from a version without Patroni; "
                "`bookcluster down --wipe` and start again")
        created = cluster_secrets.generate_local(self.run_dir)
        old_data = [p for p in self.run_dir.glob("*/pg-*/PG_VERSION")]
        if "pg_admin_password" in created and old_data:
            raise ClusterSetupError(
                f"{self.run_dir} holds data from a version without store passwords; "
                "`bookcluster down --wipe` and start again")
        if created:
            self.progress(f"generated secrets {', '.join(created)} in "
                          f"{cluster_secrets.secrets_dir(self.run_dir)}")

    def _exited(self, child: Child) -> ChildExited:
        return ChildExited(f"{child.spec.name} exited during start-up (exit "
                           f"{child.popen.poll()}): {logs.why_it_died(child.spec.log_path)}")

    async def _step(self, what: str, work: Any) -> None:
        began = time.monotonic()
        self.progress(f"[{what}] ...")
        await work
        self.progress(f"[{what}] ok ({time.monotonic() - began:.1f}s)")

    async def _start_and_wait(self, specs: list[ProcessSpec]) -> None:
        children = [self.supervisor.start(s) for s in specs]
        await asyncio.gather(*(self._wait(c) for c in children))

    def _linked_later(self, spec: ProcessSpec) -> bool:
        """A replica of a master this launcher does not run: its master's host may start
        after this one, so the replica need not be linked up yet, only answer."""
        return (self.only is not None and spec.role == "redis-replica"
                and spec.source not in self.only)

    async def _wait(self, child: Child) -> None:
        record = {**child.spec.__dict__, "log_path": str(child.spec.log_path)}
        answered = (lambda r: r.get("redis_role") is not None) \
            if self._linked_later(child.spec) else None
        try:
            await wait_healthy(record, START_TIMEOUT_S,
                               alive=lambda: child.popen.poll() is None,
                               secrets=self.topology.secrets, accept=answered)
        except RuntimeError:
            if child.popen.poll() is not None:
                raise self._exited(child) from None
            raise
        self.progress(f"  {child.spec.name:<28} pid {child.pid:<7} {child.spec.address}")

    async def _start_redis(self) -> None:
        binary = self.binaries.redis_server
        self.progress(f"  redis-server: {binary} ({self.binaries.redis_source})")
        regions = self.local_regions
        await self._start_and_wait(
            [redis_server.master_spec(binary, self.topology, r) for r in regions])
        if self.wan_delay_ms is not None:
            await self._start_wan_proxy(self.wan_delay_ms)
        await self._start_and_wait(
            [redis_server.replica_spec(binary, self.topology, r, src, self._dial(r.name, src))
             for r in regions for src in r.redis_replicas])
        await self._start_and_wait([sentinel.sentinel_spec(binary, self.topology, r)
                                    for r in regions if r.redis_sentinel is not None])

    def _dial(self, region: str, source: str) -> Endpoint:
        master = self.topology.region(source).redis_master
        return self.wan.route(region, master) if self.wan else master

    async def _start_wan_proxy(self, delay_ms: int) -> None:
        self.wan = wan.plan(self.topology, delay_ms, [r.name for r in self.local_regions])
        links, routes = wan.write(self.wan, self.run_dir)
        self.node_args += ["--wan-routes", str(routes)]
        self.worker_args += ["--wan-routes", str(routes)]
        self.progress(f"  WAN delay {delay_ms} ms one way on {len(self.wan.links)} "
                      "cross-region links")
        await self._start_and_wait([wan.proxy_spec(self.wan, links, self.run_dir, REPO_ROOT)])

    async def _start_postgres(self) -> None:
        self.progress(f"  postgres: {self.binaries.pg_bindir} ({self.binaries.pg_source}) "
                      f"under {self.binaries.patroni()}"
                      + (f", running as {self.pg_user}" if self.pg_user else ""))
        postgres_server.check_reachable(self.run_dir, self.pg_user)
        regions = self.local_regions
        for region in regions:
            patroni.prepare(self.binaries, self.topology, region, self.pg_user)
        await asyncio.gather(*(self._start_region_postgres(r) for r in regions))

    async def _start_region_postgres(self, region: Region) -> None:
        """The region's etcd, then its members at once; migrations on the leader as soon as
        there is one, while the other members clone it."""
        # etcd first, so it stops last: a leader that stops hands its key over through it.
        dcs = self.supervisor.start(etcd.etcd_spec(str(self.binaries.etcd), self.topology,
                                                   region, self.pg_user))
        await self._wait(dcs)
        if await etcd.ensure_auth(region, self.topology.secrets.get("etcd_password")):
            self.progress(f"  {region.name}: etcd now requires a login (user {etcd.USER})")
        specs = [patroni.member_spec(self.binaries, self.topology, region, i, self.pg_user)
                 for i in range(len(region.pg_members))]
        children = [self.supervisor.start(s) for s in specs]
        waits = [asyncio.ensure_future(self._wait(c)) for c in children]
        try:
            try:
                await wait_leader(region, START_TIMEOUT_S,
                                  alive=lambda: all(c.popen.poll() is None for c in children))
            except RuntimeError:
                dead = [c for c in children if c.popen.poll() is not None]
                if dead:
                    raise self._exited(dead[0]) from None
                raise
            async with region_setup.lock(self.topology, region):
                applied = await region_setup.create_and_migrate(self.topology, region)
            if applied:
                self.progress(f"  {region.name}: applied migrations {applied}")
            await asyncio.gather(*waits)
        finally:
            for waiting in waits:
                waiting.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _seed(self) -> None:
        catalog = build_catalog(self.catalog_spec, self.topology.settings.catalog_day_one())
        if self.only is None:
            await seed_cluster(self.topology, catalog, self.progress)
            return
        for region in self.local_regions:
            async with region_setup.lock(self.topology, region):
                await region_setup.seed_alone(self.topology, region.name, catalog,
                                              self.progress)

    async def _start_nodes(self) -> None:
        specs = [node_spec(self.topology, r, i, self.node_args)
                 for r in self.local_regions for i in range(len(r.nodes))]
        await self._start_and_wait(specs)
