"""Cross-region load test of bookcluster: people in every region booking shows of every region.

Each simulated user lives in one region (`--user-region-mix`) and talks only to
that region's app nodes from the topology file, round-robin from a random start.
One task, repeated after a short think time:

1. `GET /theatres` once per user (cached), then pick a target region
   (`--target-region-mix`) and, with probability `--hot-share`, one of that
   region's hot shows (the first `--hot-shows` shows of its theatres in id
   order, so seats collide), else a random theatre and one of its shows that
   is not sold out; either way `GET /theatres/{id}/shows`.
2. `GET /shows/{id}/seats` and choose 1-6 AVAILABLE seats, mostly adjacent
   (same row, consecutive numbers; often at the start of one of the first few
   blocks that fit, so users eye the same seats), sometimes scattered; then
   think 0.1-0.6 s, as people choosing seats do, while others book.
3. `POST /booking/seats/{id}/lock`. 201 is a hold; 409 `seats_unavailable`
   (someone was faster) is an expected outcome and counted as a success under
   its own name.
4. With probability `--abandon-share` walk away: cancel the hold with
   probability `--cancel-share`, else leave it to expire. Otherwise
   `POST /booking/booking/{id}/confirm` with a fresh `Idempotency-Key`; 200 is a
   sale, a 409 is an expected race outcome, also counted under its own name.

Requests are named by route template (`/shows/[id]/seats`); expected refusals
get a suffix (`/booking/seats/[id]/lock [409 seats_unavailable]`) so their
latency stays apart from real holds. Everything else (5xx such as 503
`region_unavailable`, other 4xx, a malformed answer) is a failure, so locust
exits non-zero. With `--csv PREFIX`, the final figures are also written to
`PREFIX_final_stats.csv` and `PREFIX_final_failures.csv`.
"""

from __future__ import annotations

import csv
import functools
import random
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, between, events, task
from locust.runners import WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from router.errors import TopologyError
from router.topology import load_topology

DEFAULT_TOPOLOGY = Path(__file__).resolve().parent.parent / "topology.yaml"
MAX_SEATS = 6  # per booking attempt; the service allows up to max_seats_per_booking
ADJACENT_SHARE = 0.85  # how often a user wants seats side by side
# Half of those want the start of one of the same few blocks (the first runs
# of free seats that fit, in row order), as people eyeing the best seats do.
FAVOURITE_RUNS = 3
FAVOURITE_SHARE = 0.5
# Seconds a user looks at the seat map before holding: others act meanwhile,
# which is where real holds collide.
CHOOSING_S = (0.1, 0.6)

LOCK = "/booking/seats/[id]/lock"
CONFIRM = "/booking/booking/[id]/confirm"
CANCEL = "/booking/booking/[id]/cancel"
SEATS = "/shows/[id]/seats"
SHOWS = "/theatres/[id]/shows"


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("bookcluster")
    group.add_argument("--topology", default=str(DEFAULT_TOPOLOGY),
                       help="topology file whose nodes users talk to (default: the repo's)")
    group.add_argument("--user-region-mix", default="",
                       help="where users live, e.g. north=2,south=1,west=1 "
                            "(default: every region of the topology, equally)")
    group.add_argument("--target-region-mix", default="",
                       help="whose theatres users book, same format (default: every region)")
    group.add_argument("--hot-shows", default="3",
                       help="hot shows per region: the first N shows of its theatres (default 3)")
    group.add_argument("--hot-share", default="0.3",
                       help="share of bookings aimed at a hot show, 0..1 (default 0.3)")
    group.add_argument("--abandon-share", default="0.2",
                       help="share of holds never confirmed, 0..1 (default 0.2)")
    group.add_argument("--cancel-share", default="0.5",
                       help="share of abandoned holds cancelled rather than left to expire, "
                            "0..1 (default 0.5)")


@dataclass(frozen=True)
class LoadConfig:
    nodes: Mapping[str, tuple[str, ...]]  # region -> node base URLs
    user_mix: Mapping[str, float]
    target_mix: Mapping[str, float]
    hot_shows: int
    hot_share: float
    abandon_share: float
    cancel_share: float


def parse_mix(text: str, regions: Sequence[str], option: str) -> dict[str, float]:
    """'north=2,south=1' -> {'north': 2.0, 'south': 1.0}; empty -> every region at 1."""
    if not text.strip():
        return dict.fromkeys(regions, 1.0)
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, sep, weight = part.strip().partition("=")
        if not sep or name not in regions:
            raise ValueError(f"{option}: expected region=weight with a region of "
                             f"{', '.join(regions)}, got {part.strip()!r}")
        try:
            mix[name] = float(weight)
        except ValueError:
            raise ValueError(f"{option}: weight of {name} is not a number: {weight!r}") from None
        if mix[name] < 0:
            raise ValueError(f"{option}: weight of {name} is negative")
    if not any(mix.values()):
        raise ValueError(f"{option}: at least one weight must be positive")
    return mix


def _share(value: Any, option: str) -> float:
    share = float(value)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"{option}: expected a share in 0..1, got {value}")
    return share


@functools.cache
def _load_config(topology: str, user_mix: str, target_mix: str, hot_shows: str,
                 hot_share: str, abandon_share: str, cancel_share: str) -> LoadConfig:
    topo = load_topology(topology)
    regions = list(topo.regions)
    hot = int(hot_shows)
    if hot < 0:
        raise ValueError(f"--hot-shows: expected a count >= 0, got {hot_shows}")
    return LoadConfig(
        nodes={name: tuple(f"http://{ep.host}:{ep.port}" for ep in region.nodes)
               for name, region in topo.regions.items()},
        user_mix=parse_mix(user_mix, regions, "--user-region-mix"),
        target_mix=parse_mix(target_mix, regions, "--target-region-mix"),
        hot_shows=hot,
        hot_share=_share(hot_share, "--hot-share"),
        abandon_share=_share(abandon_share, "--abandon-share"),
        cancel_share=_share(cancel_share, "--cancel-share"),
    )


def load_config(options: Any) -> LoadConfig:
    """The run's settings, read once per process (workers get the master's options)."""
    return _load_config(str(options.topology), str(options.user_region_mix),
                        str(options.target_region_mix), str(options.hot_shows),
                        str(options.hot_share), str(options.abandon_share),
                        str(options.cancel_share))


@events.init.add_listener
def _check_options(environment: Any, **_: Any) -> None:
    # Fail before any user starts. Workers check nothing here: their real
    # options arrive from the master with the first spawn message.
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    try:
        load_config(environment.parsed_options)
    except (TopologyError, ValueError) as exc:
        sys.exit(f"error: {exc}")


@events.quitting.add_listener
def _write_final_csv(environment: Any, **_: Any) -> None:
    # Locust rewrites its --csv files once a second, so they can miss the
    # last second of a run (locust issues #1806, #2299). These hold the final
    # figures, in the same columns as <prefix>_stats.csv / _failures.csv.
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix or isinstance(environment.runner, WorkerRunner):
        return
    stats = StatsCSV(environment, PERCENTILES_TO_REPORT)
    for suffix, write in (("final_stats", stats.requests_csv),
                          ("final_failures", stats.failures_csv)):
        with open(f"{prefix}_{suffix}.csv", "w", newline="") as f:
            write(csv.writer(f))


def weighted(rng: random.Random, mix: Mapping[str, float]) -> str:
    names = list(mix)
    return rng.choices(names, weights=[mix[n] for n in names])[0]


def choose_seats(rng: random.Random, seats: list[dict[str, Any]]) -> list[str]:
    """1..MAX_SEATS available seat ids: mostly a run of neighbours when one fits, else any."""
    free = [s for s in seats if s.get("status") == "AVAILABLE"]
    if not free:
        return []
    want = min(rng.randint(1, MAX_SEATS), len(free))
    if rng.random() < ADJACENT_SHARE:
        runs = [run for run in _runs(free) if len(run) >= want]
        if runs and rng.random() < FAVOURITE_SHARE:
            return rng.choice(runs[:FAVOURITE_RUNS])[:want]
        if runs:
            run = rng.choice(runs)
            start = rng.randint(0, len(run) - want)
            return run[start:start + want]
    return [s["seat_id"] for s in rng.sample(free, want)]


def _runs(free: list[dict[str, Any]]) -> list[list[str]]:
    """Maximal runs of consecutive seat numbers within a row."""
    runs: list[list[str]] = []
    last: tuple[str, int] | None = None
    for seat in sorted(free, key=lambda s: (s["row"], s["number"])):
        if last is not None and last == (seat["row"], seat["number"] - 1):
            runs[-1].append(seat["seat_id"])
        else:
            runs.append([seat["seat_id"]])
        last = (seat["row"], seat["number"])
    return runs


class Booker(FastHttpUser):
    """Browses, holds and buys seats; see the module docstring."""

    wait_time = between(0.1, 0.5)

    def __init__(self, environment: Any) -> None:
        self.config = load_config(environment.parsed_options)
        self.rng = random.Random()  # per user, seeded from the OS
        self.region = weighted(self.rng, self.config.user_mix)
        nodes = self.config.nodes[self.region]
        self.host = nodes[0]  # FastHttpUser wants a base URL; requests use absolute URLs
        super().__init__(environment)
        self.user_id = f"load-{self.region}-{uuid.uuid4().hex[:12]}"
        self._nodes = nodes
        self._next_node = self.rng.randrange(len(nodes))
        self.theatres: dict[str, list[str]] | None = None  # region -> theatre ids, sorted
        self.hot: dict[str, list[tuple[str, int]]] = {}  # region -> (theatre id, show id)

    def url(self, path: str) -> str:
        node = self._nodes[self._next_node]
        self._next_node = (self._next_node + 1) % len(self._nodes)
        return node + path

    def get_json(self, path: str, name: str) -> Any | None:
        with self.client.get(self.url(path), name=name, catch_response=True) as resp:
            body = _json(resp)
            if resp.status_code != 200 or not isinstance(body, dict):
                resp.failure(_describe(resp))
                return None
            return body

    @task
    def book(self) -> None:
        theatres = self.load_theatres()
        if theatres is None:
            return
        mix = {r: w for r, w in self.config.target_mix.items() if theatres.get(r)}
        if not mix:
            return
        target = weighted(self.rng, mix)
        show_id = self.pick_show(target, theatres[target])
        if show_id is None:
            return
        seat_ids = self.pick_seats(show_id)
        if not seat_ids:
            return
        gevent.sleep(self.rng.uniform(*CHOOSING_S))
        booking_id = self.lock(show_id, seat_ids)
        if booking_id is None:
            return
        if self.rng.random() < self.config.abandon_share:
            if self.rng.random() < self.config.cancel_share:
                self.cancel(booking_id)
            return
        self.confirm(booking_id)

    def load_theatres(self) -> dict[str, list[str]] | None:
        if self.theatres is None:
            body = self.get_json("/theatres", "/theatres")
            if body is None:
                return None
            by_region: dict[str, list[str]] = {}
            for theatre in body["theatres"]:
                by_region.setdefault(theatre["region"], []).append(theatre["id"])
            self.theatres = {r: sorted(ids) for r, ids in by_region.items()}
        return self.theatres

    def shows_of(self, theatre_id: str) -> list[dict[str, Any]] | None:
        body = self.get_json(f"/theatres/{theatre_id}/shows", SHOWS)
        return None if body is None else list(body["shows"])

    def pick_show(self, region: str, theatre_ids: list[str]) -> int | None:
        if self.config.hot_shows and self.rng.random() < self.config.hot_share:
            hot = self.hot_shows(region, theatre_ids)
            if hot:
                theatre_id, show_id = self.rng.choice(hot)
                return show_id if self.shows_of(theatre_id) is not None else None
        shows = self.shows_of(self.rng.choice(theatre_ids))
        if not shows:
            return None
        # The badge is micro-cached by the node, so a "left" show may be sold out by now.
        left = [s for s in shows if not (s.get("availability") or {}).get("sold_out")]
        return int(self.rng.choice(left or shows)["id"])

    def hot_shows(self, region: str, theatre_ids: list[str]) -> list[tuple[str, int]]:
        """The region's first N shows, walking its theatres in id order; found once per user."""
        if region not in self.hot:
            found: list[tuple[str, int]] = []
            for theatre_id in theatre_ids:
                shows = self.shows_of(theatre_id)
                if shows is None:
                    return []  # try again next time
                found += [(theatre_id, int(s["id"])) for s in shows]
                if len(found) >= self.config.hot_shows:
                    break
            self.hot[region] = found[: self.config.hot_shows]
        return self.hot[region]

    def pick_seats(self, show_id: int) -> list[str]:
        with self.client.get(self.url(f"/shows/{show_id}/seats"), name=SEATS,
                             catch_response=True) as resp:
            body = _json(resp)
            if resp.status_code != 200 or not isinstance(body, dict):
                resp.failure(_describe(resp))
                return []
            seat_ids = choose_seats(self.rng, body["seats"])
            if not seat_ids:
                resp.request_meta["name"] = f"{SEATS} [sold out]"
            return seat_ids

    def lock(self, show_id: int, seat_ids: list[str]) -> str | None:
        body = {"user_id": self.user_id, "seat_ids": seat_ids}
        with self.client.post(self.url(f"/booking/seats/{show_id}/lock"), json=body, name=LOCK,
                              catch_response=True) as resp:
            booking = _json(resp)
            if resp.status_code == 201 and isinstance(booking, dict):
                if booking.get("status") != "INITIATED" or not booking.get("booking_id") or \
                        sorted(booking.get("seat_ids", [])) != sorted(seat_ids):
                    resp.failure(f"201 but not our hold: {resp.text[:200]}")
                    return None
                return str(booking["booking_id"])
            if resp.status_code == 409 and _error(resp) == "seats_unavailable":
                resp.request_meta["name"] = f"{LOCK} [409 seats_unavailable]"
                resp.success()
            else:
                resp.failure(_describe(resp))
            return None

    def confirm(self, booking_id: str) -> None:
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        body = {"payment_id": f"pay-{uuid.uuid4().hex}"}
        with self.client.post(self.url(f"/booking/booking/{booking_id}/confirm"), json=body,
                              headers=headers, name=CONFIRM, catch_response=True) as resp:
            if resp.status_code == 200:
                booking = _json(resp)
                if not isinstance(booking, dict) or booking.get("status") != "CONFIRMED":
                    resp.failure(f"200 but not confirmed: {resp.text[:200]}")
            elif resp.status_code == 409:
                resp.request_meta["name"] = f"{CONFIRM} [409 {_error(resp)}]"
                resp.success()
            else:
                resp.failure(_describe(resp))

    def cancel(self, booking_id: str) -> None:
        with self.client.post(self.url(f"/booking/booking/{booking_id}/cancel"), name=CANCEL,
                              catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(_describe(resp))


def _json(resp: Any) -> Any:
    try:
        return resp.json()
    except (ValueError, TypeError):  # not JSON, or no body at all (no answer)
        return None


def _error(resp: Any) -> str:
    body = _json(resp)
    return str(body.get("error")) if isinstance(body, dict) else "?"


def _describe(resp: Any) -> str:
    """A failure message that groups well in locust's failure table: status and error code."""
    if not resp.status_code:
        return f"no answer: {getattr(resp, 'error', None)!r}"
    if resp.status_code < 300:
        return f"{resp.status_code} but the answer is not the expected JSON"
    return f"{resp.status_code} {_error(resp)}"
