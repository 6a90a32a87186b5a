"""Cross-region load test of bookcluster: people in every region booking shows of every region.

Each simulated user lives in one region (`--user-region-mix`) and talks only to
that region's app nodes from the topology file, round-robin from a random start.
It is a customer with a user id and a token (JWT, minted here with the
cluster's key from the topology's run folder; workers mint their own). One
task, repeated after a short think time:

1. `GET /theatres` once per user (cached), then pick a target region
   (`--target-region-mix`) and, with probability `--hot-share`, one of that
   region's hot shows (the first `--hot-shows` shows of its theatres in id
   order, so seats collide), else a random theatre and one of its shows that
   is not sold out; either way `GET /theatres/{id}/shows`.
2. `GET /shows/{id}/seats` and choose 1-6 AVAILABLE seats, mostly adjacent
   (`picking.py`); then think 0.1-0.6 s, as people choosing seats do, while
   others book.
3. `POST /booking/seats/{id}/lock` with the token. 201 is a hold; 409
   `seats_unavailable` (someone was faster) is an expected outcome and counted
   as a success under its own name.
4. With probability `--abandon-share` walk away: cancel the hold with
   probability `--cancel-share`, else leave it to expire. Otherwise pay:
   `POST /booking/booking/{id}/pay` (201: a payment intent at the gateway,
   which captures it and sends the signed webhook; the region's worker sells).
5. Most users then poll `GET /booking/booking/{id}` every 0.3 s, for at most
   15 s, until it is CONFIRMED (or CANCELLED: the gateway failed the payment,
   `payments.fail_share`). With probability `--anxious-share` the user instead
   watches the gateway's checkout page until the payment is captured and
   calls `POST /booking/booking/{id}/confirm` with its `payment_id` and a fresh
   `Idempotency-Key` (200 CONFIRMED also when the webhook's saga sold it first).

Each end-to-end payment is also reported as a `FLOW` entry, timed from the
pay's 201 to the CONFIRMED (or CANCELLED) booking; a sale not seen within 15 s
is a failure there. Per-user caps (4 open holds per home region, 10 seats per
show) and the per-user write rate are never reached: a customer has at most
one open hold, and one who leaves a hold behind (abandoned, or a payment that
went wrong) is replaced by a new customer with a new id and token.

Requests are named by route template (`/shows/[id]/seats`); expected refusals
get a suffix (`/booking/seats/[id]/lock [409 seats_unavailable]`) so their
latency stays apart from real holds. Everything else (429 `rate_limited`,
5xx such as 503 `region_unavailable`, other 4xx, a malformed answer) is a
failure, so locust exits non-zero. At the end it prints how many requests were
refused with 429 (the default limits must never refuse a load test: it should
say 0) before locust's own summary; with `--csv PREFIX`, the final figures are
also written to `PREFIX_final_stats.csv` and `PREFIX_final_failures.csv`.
"""

from __future__ import annotations

import csv
import random
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import gevent
from loadconfig import load_config
from locust import FastHttpUser, between, events, task
from locust.runners import WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV, StatsError
from picking import choose_seats, weighted

from bookcluster.node.auth import mint
from bookcluster.node.middlewares import HOME_NODES_HEADER
from bookcluster.topology.errors import RouterError

DEFAULT_TOPOLOGY = Path(__file__).resolve().parent.parent / "topology.yaml"
# Seconds a user looks at the seat map before holding: others act meanwhile,
# which is where real holds collide.
CHOOSING_S = (0.1, 0.6)
POLL_EVERY_S = 0.3
SALE_TIMEOUT_S = 15.0  # pay's 201 -> CONFIRMED, at most (capture delay + webhook + saga)
TOKEN_TTL_S = 3600.0
TOKEN_RENEW_S = TOKEN_TTL_S / 2  # a long run mints a fresh token well before expiry

LOCK = "/booking/seats/[id]/lock"
PAY = "/booking/booking/[id]/pay"
CONFIRM = "/booking/booking/[id]/confirm"
CANCEL = "/booking/booking/[id]/cancel"
POLL = "/booking/booking/[id] [poll]"
CHECKOUT = "gateway /checkout/[id] [poll]"
SEATS = "/shows/[id]/seats"
SHOWS = "/theatres/[id]/shows"
FLOW = "FLOW"
SOLD = "pay -> CONFIRMED (webhook)"
SOLD_BY_CONFIRM = "pay -> capture -> confirm -> CONFIRMED"
PAYMENT_FAILED = "pay -> CANCELLED [payment failed]"


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
                       help="share of holds never paid, 0..1 (default 0.2)")
    group.add_argument("--cancel-share", default="0.5",
                       help="share of abandoned holds cancelled rather than left to expire, "
                            "0..1 (default 0.5)")
    group.add_argument("--anxious-share", default="0.2",
                       help="share of payers who confirm the captured payment themselves "
                            "instead of waiting for the webhook, 0..1 (default 0.2)")


@events.init.add_listener
def _check_options(environment: Any, **_: Any) -> None:
    # Fail before any user starts. Workers check nothing here: their real
    # options arrive from the master with the first spawn message.
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    try:
        load_config(environment.parsed_options)
    except (RouterError, ValueError) as exc:  # a bad topology, a missing secret, a bad option
        sys.exit(f"error: {exc}")


@events.quitting.add_listener
def _final_figures(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return  # the master has every worker's figures
    # A refusal's failure reads like CatchResponseError('429 rate_limited') (`_describe`).
    limited = sum(e.occurrences for e in environment.runner.stats.errors.values()
                  if re.search(r"(^|\W)429 ", StatsError.parse_error(e.error)))
    print(f"rate limited (429): {limited}", flush=True)
    # Locust rewrites its --csv files once a second, so they can miss the
    # last second of a run (locust issues #1806, #2299). These hold the final
    # figures, in the same columns as <prefix>_stats.csv / _failures.csv.
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix:
        return
    stats = StatsCSV(environment, PERCENTILES_TO_REPORT)
    for suffix, write in (("final_stats", stats.requests_csv),
                          ("final_failures", stats.failures_csv)):
        with open(f"{prefix}_{suffix}.csv", "w", newline="") as f:
            write(csv.writer(f))


class FlowFailed(Exception):
    """A payment that did not end as promised (reported under FLOW)."""


class RequestFailed(Exception):
    """A request of the payment flow failed; it is reported under its own name already."""


class Booker(FastHttpUser):
    """Browses, holds, pays and buys seats; see the module docstring."""

    wait_time = between(0.1, 0.5)

    def __init__(self, environment: Any) -> None:
        self.config = load_config(environment.parsed_options)
        self.rng = random.Random()  # per user, seeded from the OS
        self.region = weighted(self.rng, self.config.user_mix)
        nodes = self.config.nodes[self.region]
        self.host = nodes[0]  # FastHttpUser wants a base URL; requests use absolute URLs
        super().__init__(environment)
        self._nodes = nodes
        self._next_node = self.rng.randrange(len(nodes))
        # The show's home nodes, from the seat map's X-Bookcluster-Home-Nodes header:
        # writes go there directly instead of through a forward.
        self._home_nodes: list[str] = []
        self.theatres: dict[str, list[str]] | None = None  # region -> theatre ids, sorted
        self.hot: dict[str, list[tuple[str, int]]] = {}  # region -> (theatre id, show id)
        self.new_customer()

    def new_customer(self) -> None:
        """Another person at this keyboard: a new user id and token. Called whenever a hold
        of ours may stay open, so no user ever reaches the per-user caps."""
        self.user_id = f"load-{self.region}-{uuid.uuid4().hex[:12]}"
        self._mint()

    def _mint(self) -> None:
        self._token = mint(self.config.topology, self.user_id, TOKEN_TTL_S)
        self._minted_at = time.monotonic()

    def auth(self, **headers: str) -> dict[str, str]:
        if time.monotonic() - self._minted_at > TOKEN_RENEW_S:
            self._mint()
        return {"Authorization": f"Bearer {self._token}", **headers}

    def url(self, path: str) -> str:
        node = self._nodes[self._next_node]
        self._next_node = (self._next_node + 1) % len(self._nodes)
        return node + path

    def write_url(self, path: str) -> str:
        """A write goes to a home node of the show when the cluster told us which."""
        if not self._home_nodes:
            return self.url(path)
        return self.rng.choice(self._home_nodes) + path

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
            left_open = self.rng.random() >= self.config.cancel_share or \
                not self.cancel(booking_id)
        else:
            left_open = not self.buy(booking_id)
        if left_open:
            self.new_customer()

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
            self._home_nodes = (resp.headers.get(HOME_NODES_HEADER) or "").split()
            seat_ids = choose_seats(self.rng, body["seats"])
            if not seat_ids:
                resp.request_meta["name"] = f"{SEATS} [sold out]"
            return seat_ids

    def lock(self, show_id: int, seat_ids: list[str]) -> str | None:
        with self.client.post(self.write_url(f"/booking/seats/{show_id}/lock"),
                              json={"seat_ids": seat_ids}, headers=self.auth(), name=LOCK,
                              catch_response=True) as resp:
            booking = _json(resp)
            if resp.status_code == 201 and isinstance(booking, dict):
                if booking.get("status") != "INITIATED" or not booking.get("booking_id") or \
                        booking.get("user_id") != self.user_id or \
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

    def cancel(self, booking_id: str) -> bool:
        with self.client.post(self.write_url(f"/booking/booking/{booking_id}/cancel"),
                              headers=self.auth(), name=CANCEL, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(_describe(resp))
                return False
            return True

    # -- paying ---------------------------------------------------------------------

    def buy(self, booking_id: str) -> bool:
        """Pay, then wait for the sale (or confirm it ourselves). True if the booking ended
        CONFIRMED or CANCELLED, False if it may still be open."""
        payment = self.pay(booking_id)
        if payment is None:
            return False
        paid_at = time.perf_counter()
        anxious = self.rng.random() < self.config.anxious_share
        flow = SOLD_BY_CONFIRM if anxious else SOLD
        try:
            status = self.confirm_when_captured(booking_id, payment) if anxious else None
            if status is None:  # waiting for the webhook's sale (or the failed payment)
                status = self.wait_for_sale(booking_id, payment["payment_id"])
        except FlowFailed as exc:
            self.report(flow, paid_at, exc)
            return False
        except RequestFailed:
            return False
        self.report(PAYMENT_FAILED if status == "CANCELLED" else flow, paid_at)
        return True

    def pay(self, booking_id: str) -> dict[str, Any] | None:
        with self.client.post(self.write_url(f"/booking/booking/{booking_id}/pay"),
                              headers=self.auth(), name=PAY, catch_response=True) as resp:
            payment = _json(resp)
            if resp.status_code != 201 or not isinstance(payment, dict):
                resp.failure(_describe(resp))
                return None
            if payment.get("booking_id") != booking_id or not payment.get("payment_id") or \
                    not payment.get("checkout_url") or \
                    payment.get("status") not in ("PENDING", "CAPTURED", "FAILED"):
                resp.failure(f"201 but not a payment of our booking: {resp.text[:200]}")
                return None
            return payment

    def wait_for_sale(self, booking_id: str, payment_id: str) -> str:
        """Poll the booking until CONFIRMED by `payment_id` or CANCELLED; FlowFailed if it
        is anything else or still INITIATED after SALE_TIMEOUT_S."""
        deadline = time.monotonic() + SALE_TIMEOUT_S
        while True:
            with self.client.get(self.url(f"/booking/booking/{booking_id}"),
                                 headers=self.auth(), name=POLL, catch_response=True) as resp:
                booking = _json(resp)
                if resp.status_code != 200 or not isinstance(booking, dict):
                    resp.failure(_describe(resp))
                    raise RequestFailed
            status = booking.get("status")
            if status == "CONFIRMED" and booking.get("payment_id") == payment_id:
                return status
            if status == "CANCELLED":
                return status
            if status != "INITIATED":
                raise FlowFailed(f"booking became {status} (payment {booking.get('payment_id')})")
            if time.monotonic() > deadline:
                raise FlowFailed(f"still INITIATED {SALE_TIMEOUT_S:g} s after paying")
            gevent.sleep(POLL_EVERY_S)

    def confirm_when_captured(self, booking_id: str, payment: dict[str, Any]) -> str | None:
        """Watch the gateway's checkout page until the payment is captured, then confirm it.
        None if the payment failed (the booking is then cancelled by the saga)."""
        deadline = time.monotonic() + SALE_TIMEOUT_S
        state = payment["status"]
        while state == "PENDING":
            if time.monotonic() > deadline:
                raise FlowFailed(f"payment still PENDING {SALE_TIMEOUT_S:g} s after paying")
            gevent.sleep(POLL_EVERY_S)
            with self.client.get(payment["checkout_url"], name=CHECKOUT,
                                 catch_response=True) as resp:
                page = _json(resp)
                if resp.status_code != 200 or not isinstance(page, dict):
                    resp.failure(_describe(resp))
                    raise RequestFailed
                state = page.get("status")
        if state != "CAPTURED":
            return None
        return self.confirm(booking_id, payment["payment_id"])

    def confirm(self, booking_id: str, payment_id: str) -> str:
        headers = self.auth(**{"Idempotency-Key": uuid.uuid4().hex})
        with self.client.post(self.write_url(f"/booking/booking/{booking_id}/confirm"),
                              json={"payment_id": payment_id}, headers=headers, name=CONFIRM,
                              catch_response=True) as resp:
            booking = _json(resp)
            if resp.status_code == 200 and isinstance(booking, dict) and \
                    booking.get("status") == "CONFIRMED" and \
                    booking.get("payment_id") == payment_id:
                return "CONFIRMED"
            if resp.status_code == 200:
                resp.failure(f"200 but not confirmed with our payment: {resp.text[:200]}")
            else:  # the payment is captured and the hold lasts minutes: no race is expected
                resp.failure(_describe(resp))
            raise RequestFailed

    def report(self, name: str, since: float, exc: Exception | None = None) -> None:
        self.environment.events.request.fire(
            request_type=FLOW, name=name, response_time=(time.perf_counter() - since) * 1000,
            response_length=0, exception=exc, context={})


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
