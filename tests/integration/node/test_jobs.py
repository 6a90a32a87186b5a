"""Region-local jobs: outbox -> queue -> worker; tickets, mail, crashes, dead letters."""

from __future__ import annotations

import asyncio
import io
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
from tests.integration.support import Session, bearer, call, free_ports


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
    # What gate staff scan: the QR code carries exactly that signed reference.
    assert [code.text for code in zxingcpp.read_barcodes(image)] == [rows[0]["reference"]]
    mail = maildir(clean.topology.settings.run_dir, "west") / "new" / f"{booking}_confirmed.eml"
    await eventually(lambda: asyncio.to_thread(mail.exists))
    text = mail.read_text()
    assert "mira@users.bookcluster.local" in text and "confirmed" in text
    assert rows[0]["reference"] in text
    # The jobs ran in west, the booking's home region, and only once each.
    notes = await clean.fetch("west", "SELECT kind FROM notification WHERE booking_id = $1",
                              booking)
    assert [n["kind"] for n in notes] == ["confirmed"]
    for region in ("north", "south"):
        assert not await clean.fetch(region, "SELECT 1 FROM outbox")


async def add_probe(cluster: Cluster, region: str, name: str, **opts: Any) -> None:
    queue = jobqueue.open_queue(cluster.topology, region)
    try:
        await queue.add("probe", {"name": name, "sleep_s": opts.pop("sleep_s", 0)},
                        {**jobqueue.JOB_OPTIONS, "jobId": f"probe-{name}", **opts})
    finally:
        await queue.close()


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
    finally:
        for name in workers.values():
            if clean.launcher.child(name).popen.poll() is not None and name == "south.worker":
                await clean.launcher.restart(name)
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
    await add_probe(clean, "north", "flaky", attempts=3,
                    backoff={"type": "exponential", "delay": 100})
    queue = jobqueue.open_queue(clean.topology, "north")
    try:
        async def dead() -> list[dict[str, Any]]:
            return await jobqueue.dead_letters(queue)

        letters = await eventually(dead, within=30)
        assert letters[0]["id"] == "probe-flaky" and letters[0]["attempts"] == 3
        assert len((folder / "flaky.runs").read_text().splitlines()) == 3  # retried
        listing = await asyncio.to_thread(bookcluster, clean, "jobs", "failed", "--region",
                                          "north")
        assert listing.returncode == 0 and "probe-flaky" in listing.stdout
        switch.unlink()
        replay = await asyncio.to_thread(bookcluster, clean, "jobs", "replay", "--region",
                                         "north")
        assert "replayed 1" in replay.stdout
        await eventually(lambda: asyncio.to_thread((folder / "flaky.done").exists))
        assert await jobqueue.dead_letters(queue) == []
    finally:
        await queue.close()
    worker = clean.topology.region("north").worker
    assert worker is not None
    async with http.get(f"http://{worker.host}:{worker.port}/metrics") as resp:
        text = await resp.text()
    assert 'bookcluster_jobs_total{kind="probe",outcome="dead",region="north"}' in text
    assert 'bookcluster_queue_depth{region="north",state="waiting"}' in text
