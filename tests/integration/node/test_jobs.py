"""Region-local jobs: the outbox is the queue, the region's workers run it; tickets,
mail, a worker killed or frozen mid-job, leases, retries, dead letters."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import zxingcpp
from PIL import Image

from bookcluster.booking.signing import verify_ticket_reference
from bookcluster.stores import jobqueue
from bookcluster.topology.model import Endpoint
from bookcluster.worker.jobs.notifications import maildir
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.node.test_holds import confirm, hold
from tests.integration.support import Session, bearer, call, free_ports, metric


def cluster_secret(name: str) -> str:
    assert Session.topology is not None
    return Session.topology.secrets.get(name)


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def test_confirm_makes_a_ticket_and_a_mail(clean: Cluster, http: aiohttp.ClientSession,
                                                 catalog: Any) -> None:
    show = shows_in(clean, catalog, "west")[0]
    _, held = await hold(http, clean.node("north"), show, "mira", seats_of(catalog, show, 2))
    booking = held["booking_id"]
    url = f"{clean.node('south')}/booking/booking/{booking}/ticket"
    status, body = await call(http, "GET", url)
    assert status == 409 and body["error"] == "booking_not_pending"
    await confirm(http, clean.node("west"), booking, "k", "p")

    async def ticket() -> bytes | None:
        async with http.get(url, headers=bearer("mira")) as resp:
            return await resp.read() if resp.status == 200 else None

    png = await eventually(ticket)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.width > 300
    rows = await clean.fetch("west", "SELECT reference FROM ticket WHERE booking_id = $1",
                             booking)
    assert verify_ticket_reference(cluster_secret("ticket_secret"), rows[0]["reference"]) == booking
    # What gate staff scan: the QR code carries the booking's signed ticket (its owner's
    # answer has the same text).
    _, mine = await call(http, "GET", f"{clean.node('west')}/booking/booking/{booking}",
                         user="mira")
    assert [code.text for code in zxingcpp.read_barcodes(image)] == [mine["ticket"]["payload"]]
    mail = maildir(clean.topology.settings.run_dir, "west") / "new" / f"{booking}_confirmed.eml"
    await eventually(lambda: asyncio.to_thread(mail.exists))
    text = mail.read_text()
    assert "mira@users.bookcluster.local" in text and "confirmed" in text
    assert rows[0]["reference"] in text
    # The mail's job carried what the sale knew (no read of the booking for it).
    jobs = await clean.fetch("west", "SELECT payload FROM outbox WHERE kind = 'notification'")
    assert [json.loads(j["payload"]) for j in jobs] == [{
        "booking_id": booking, "event": "confirmed", "user_id": "mira",
        "seat_ids": sorted(seats_of(catalog, show, 2))}]
    # The jobs ran in west, the booking's home region, and only once each.
    notes = await clean.fetch("west", "SELECT kind FROM notification WHERE booking_id = $1",
                              booking)
    assert [n["kind"] for n in notes] == ["confirmed"]
    for region in ("north", "south"):
        assert not await clean.fetch(region, "SELECT 1 FROM outbox")


async def add_probe(cluster: Cluster, region: str, name: str, *, sleep_s: float = 0,
                    attempts: int = jobqueue.JOB_ATTEMPTS,
                    backoff_ms: int = jobqueue.BACKOFF_MS) -> str:
    conn = await cluster.pg(region)
    try:
        return await jobqueue.add(conn, "probe", {"name": name, "sleep_s": sleep_s},
                                  attempts=attempts, backoff_ms=backoff_ms)
    finally:
        await conn.close()


async def outbox_empty(cluster: Cluster, region: str) -> bool:
    """No job left to run (finished ones are kept a while, then pruned)."""
    return not await cluster.fetch(region, "SELECT 1 FROM outbox WHERE done_at IS NULL")


def runs_of(folder: Path, name: str) -> list[tuple[int, float]]:
    """(pid, unix time) of each run of probe `name`, in order."""
    path = folder / f"{name}.runs"
    if not path.exists():
        return []
    return [(int(pid), float(at)) for pid, at in
            (line.split() for line in path.read_text().splitlines())]


def probe_dir(cluster: Cluster, region: str) -> Path:
    return cluster.topology.settings.run_dir / "probe" / region


async def test_job_of_a_killed_worker_runs_on_another(clean: Cluster) -> None:
    """SIGKILL the worker in the middle of a job: another worker of the region runs it."""
    extra = await clean.launcher.start_extra_worker(
        "south", Endpoint("127.0.0.1", free_ports(1)[0]))
    workers = {c.pid: c.spec.name for c in (clean.launcher.child("south.worker"), extra)}
    runs = probe_dir(clean, "south") / "crash.runs"
    done = probe_dir(clean, "south") / "crash.done"
    try:
        await add_probe(clean, "south", "crash", sleep_s=3)
        await eventually(lambda: asyncio.to_thread(runs.exists))
        first = int(runs.read_text().split()[0])
        assert first in workers
        os.kill(first, signal.SIGKILL)
        await eventually(lambda: asyncio.to_thread(done.exists), within=30)
        pids = [int(line.split()[0]) for line in runs.read_text().splitlines()]
        assert pids[0] == first and len(pids) == 2
        assert int(done.read_text()) == pids[1] != first and pids[1] in workers
        await eventually(lambda: outbox_empty(clean, "south"))
    finally:
        for name in workers.values():
            if clean.launcher.child(name).popen.poll() is not None and name == "south.worker":
                await clean.launcher.restart(name)
        clean.launcher.stop_child(extra.spec.name)


async def test_job_of_a_frozen_worker_runs_on_another_and_not_again_after(
        clean: Cluster, http: aiohttp.ClientSession) -> None:
    """SIGSTOP the worker in the middle of a job: after its lease another worker runs it;
    SIGCONT: the first learns at its next renewal that the job is not its own any more and
    stops it, so the job ends once, by the second (the first's run would have ended
    before the second's)."""
    main = clean.topology.region("south").worker
    assert main is not None
    endpoint = Endpoint("127.0.0.1", free_ports(1)[0])
    extra = await clean.launcher.start_extra_worker("south", endpoint)
    urls = {clean.launcher.child("south.worker").pid: f"http://{main}",
            extra.pid: f"http://{endpoint}"}
    workers = set(urls)
    folder = probe_dir(clean, "south")
    done = folder / "frozen.done"
    frozen = None

    async def ended() -> dict[int, float]:
        """Probe jobs each worker ran to their end so far."""
        return {pid: await metric(http, url, "bookcluster_jobs_total", kind="probe",
                                  outcome="ok") for pid, url in urls.items()}

    try:
        before = await ended()
        # Longer than the lease, so the frozen worker's own run is not over when it wakes.
        await add_probe(clean, "south", "frozen", sleep_s=3 * jobqueue.LEASE_S)
        await eventually(lambda: asyncio.to_thread(runs_of, folder, "frozen"))
        frozen = runs_of(folder, "frozen")[0][0]
        assert frozen in workers
        os.kill(frozen, signal.SIGSTOP)

        async def second_run() -> bool:
            return len(await asyncio.to_thread(runs_of, folder, "frozen")) == 2

        await eventually(second_run, within=30)
        os.kill(frozen, signal.SIGCONT)
        frozen_pid, frozen = frozen, None
        await eventually(lambda: asyncio.to_thread(done.exists), within=60)
        await eventually(lambda: outbox_empty(clean, "south"))
        await asyncio.sleep(1)  # a late end by the first worker would show by now
        runs = runs_of(folder, "frozen")
        assert [pid for pid, _ in runs][0] == frozen_pid and len(runs) == 2
        assert runs[1][0] in workers and runs[1][0] != frozen_pid
        assert int(done.read_text()) == runs[1][0]
        after = await ended()
        assert {pid: after[pid] - before[pid] for pid in urls} == {frozen_pid: 0,
                                                                   runs[1][0]: 1}
    finally:
        if frozen is not None:
            os.kill(frozen, signal.SIGCONT)
        clean.launcher.stop_child(extra.spec.name)


async def test_two_live_workers_never_run_one_job_at_once(clean: Cluster) -> None:
    """Jobs that outlast the lease (renewed) and many short ones, two workers of the
    region claiming side by side: every job ran exactly once, and every job ran."""
    extra = await clean.launcher.start_extra_worker(
        "west", Endpoint("127.0.0.1", free_ports(1)[0]))
    workers = {c.pid for c in (clean.launcher.child("west.worker"), extra)}
    folder = probe_dir(clean, "west")
    long_ones = [f"long{i}" for i in range(3)]
    short_ones = [f"short{i}" for i in range(40)]
    try:
        for name in long_ones:
            await add_probe(clean, "west", name, sleep_s=2 * jobqueue.LEASE_S)
        for name in short_ones:
            await add_probe(clean, "west", name, sleep_s=0.05)

        async def all_done() -> bool:
            return all((folder / f"{n}.done").exists() for n in long_ones + short_ones)

        await eventually(all_done, within=60)
        ran_by = set()
        for name in long_ones + short_ones:
            runs = runs_of(folder, name)
            assert len(runs) == 1, (name, runs)
            ran_by.add(runs[0][0])
        assert ran_by <= workers
        await eventually(lambda: outbox_empty(clean, "west"))
    finally:
        clean.launcher.stop_child(extra.spec.name)


def bookcluster(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bookcluster", "--topology",
                           str(cluster.topology.path), *args],
                          capture_output=True, text=True, timeout=60, check=False)


async def test_failed_jobs_retry_then_dead_letter_then_replay(clean: Cluster,
                                                              http: aiohttp.ClientSession) -> None:
    folder = probe_dir(clean, "north")
    folder.mkdir(parents=True, exist_ok=True)
    switch = folder / "flaky.fail"
    switch.write_text("fail until removed")
    job = await add_probe(clean, "north", "flaky", attempts=3, backoff_ms=100)
    conn = await clean.pg("north")
    try:
        async def dead() -> list[dict[str, Any]]:
            return await jobqueue.dead_letters(conn)

        letters = await eventually(dead, within=30)
        assert [(d["id"], d["kind"], d["attempts"]) for d in letters] == [(job, "probe", 3)]
        assert letters[0]["reason"] == "RuntimeError: probe flaky asked to fail"
        assert letters[0]["data"]["name"] == "flaky"
        runs = runs_of(folder, "flaky")
        assert len(runs) == 3  # retried, then no more
        # Each retry waited out its backoff: 0.1 s, then 0.2 s.
        assert runs[1][1] - runs[0][1] >= 0.1 and runs[2][1] - runs[1][1] >= 0.2
        assert (await jobqueue.counts(conn))["failed"] == 1
        listing = await asyncio.to_thread(bookcluster, clean, "jobs", "failed", "--region",
                                          "north")
        assert listing.returncode == 0 and job in listing.stdout
        counts = await asyncio.to_thread(bookcluster, clean, "jobs", "counts", "--region",
                                         "north", "--json")
        assert counts.returncode == 0 and json.loads(counts.stdout)["regions"]["north"][
            "failed"] == 1, counts.stdout
        table = await asyncio.to_thread(bookcluster, clean, "jobs", "counts", "--region",
                                        "north")
        assert table.stdout.splitlines()[0].split()[:2] == ["REGION", "WAITING"]
        assert table.stdout.splitlines()[2].split()[0] == "north", table.stdout
        switch.unlink()
        replay = await asyncio.to_thread(bookcluster, clean, "jobs", "replay", "--region",
                                         "north")
        assert "replayed 1" in replay.stdout
        await eventually(lambda: asyncio.to_thread((folder / "flaky.done").exists))
        assert await jobqueue.dead_letters(conn) == []
        assert len(runs_of(folder, "flaky")) == 4
        await eventually(lambda: outbox_empty(clean, "north"))
        assert (await jobqueue.counts(conn))["completed"] >= 1
        # Finished jobs are kept a while, then pruned; a job not run yet never is.
        waiting = await conn.fetchval(
            "INSERT INTO outbox (kind, payload, run_at) VALUES ('probe', '{}', "
            "now() + interval '1 hour') RETURNING id")
        assert await jobqueue.prune(conn, 0) >= 1
        left = await conn.fetch("SELECT id, done_at FROM outbox")
        assert [(r["id"], r["done_at"]) for r in left] == [(waiting, None)]
    finally:
        await conn.close()
    worker = clean.topology.region("north").worker
    assert worker is not None
    async with http.get(f"http://{worker.host}:{worker.port}/metrics") as resp:
        text = await resp.text()
    assert 'bookcluster_jobs_total{kind="probe",outcome="dead",region="north"}' in text
    assert 'bookcluster_queue_depth{region="north",state="waiting"}' in text
