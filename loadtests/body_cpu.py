#!/usr/bin/env python3
"""CPU per request of the request-body path: parse + validate the hold, confirm and pay
bodies, and encode a booking answer. No servers; one process, one core.

    .venv/bin/python loadtests/body_cpu.py [--rounds 20000] [--json]

Compares the path before `bookcluster/booking/models.py` (a verbatim copy below:
`json.loads` + hand-written checks, run twice per hold on the node that serves it,
and once more on a node that forwards it) with the candidates that were measured
to choose a library (pydantic v2, msgspec; each behind the same hostile-body
checks, since a parse that skips unknown fields would let a 900-deep or
5000-digit extra field through), and with what `models.py` does now.
Prints microseconds of CPU (process time) per body and per request. Measured
2026-12-07 on the 2-core dev machine (busy: figures vary +-30 % between runs; the
order did not), three runs of --rounds 10000: a hold request 29-32 us of CPU before
-> 9 us now, a confirm body 12-13 -> 9-12, a pay body 4.4-4.6 -> 1.4-1.5, a booking
answer 7.6-8.4 -> 3.5-3.7; pydantic v2 in the same place: 18-21 / 13-15 / 5.8-6.8 /
7.7-9.3, msgspec chosen.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field, StrictStr

BODIES = {
    "hold": b'{"seat_ids": ["C7", "C8", "C9", "C10"]}',
    "confirm": b'{"payment_id": "pay_3fa85f6457174562b3fc2c963f66afa6"}',
    "pay": b"{}",
}
USER = "user-42"
CAP = 10
NOW = datetime(2026, 12, 7, 5, 30, tzinfo=UTC)
ROW = {"id": "b1234-0123456789abcdef", "user_id": USER, "show_id": 1234,
       "seat_ids": ["C10", "C7", "C8", "C9"], "status": "INITIATED", "amount_paise": 84000,
       "payment_id": None, "created_at": NOW, "expires_at": NOW + timedelta(minutes=10),
       "fence_token": 998877}
# Per request on the node that serves it: (parses + validations of the body) before / after.
PASSES_BEFORE = {"hold": 2, "confirm": 1, "pay": 1}  # hold: its turn, then the view
PASSES_AFTER = {"hold": 1, "confirm": 1, "pay": 1}


# -- the path before models.py (node/body.py, booking/holds.py, confirm.py, pay.py) ----------

class Invalid(Exception):
    pass


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _depth(value: Any, cap: int = 32) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= cap:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1)
                         for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def old_parse(raw: bytes) -> Any:
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_not_json)
    except (ValueError, RecursionError):
        raise Invalid from None
    if _depth(value) > 32:
        raise Invalid
    return value


def old_hold(raw: bytes) -> list[str]:
    body = old_parse(raw)
    if not isinstance(body, dict):
        raise Invalid
    if "user_id" in body and body["user_id"] != USER:
        raise Invalid
    seat_ids = body.get("seat_ids")
    if not isinstance(seat_ids, list) or not seat_ids or len(seat_ids) > CAP:
        raise Invalid
    if not all(isinstance(s, str) for s in seat_ids):
        raise Invalid
    if sorted(s for s, n in Counter(seat_ids).items() if n > 1):
        raise Invalid
    return sorted(seat_ids)


def old_confirm(raw: bytes) -> tuple[str, str]:
    import hashlib
    import re
    body = old_parse(raw)
    if not isinstance(body, dict) or not isinstance(body.get("payment_id"), str) \
            or not re.match(r"^[A-Za-z0-9_-]{1,128}$", body["payment_id"]):
        raise Invalid
    canonical = json.dumps({"booking_id": ROW["id"], "body": body}, sort_keys=True)
    return body["payment_id"], hashlib.sha256(canonical.encode()).hexdigest()


def old_pay(raw: bytes) -> str | None:
    body = old_parse(raw)
    if body == {}:
        return None
    raise Invalid


def old_answer(row: dict[str, Any]) -> bytes:
    answer = {"booking_id": row["id"], "user_id": row["user_id"], "show_id": row["show_id"],
              "region": "north", "seat_ids": list(row["seat_ids"]), "status": row["status"],
              "amount_paise": row["amount_paise"], "payment_id": row["payment_id"],
              "created_at": row["created_at"].isoformat(),
              "expires_at": row["expires_at"].isoformat(), "hold_token": row["fence_token"]}
    return json.dumps(answer).encode()  # what web.json_response does


OLD = {"hold": old_hold, "confirm": old_confirm, "pay": old_pay, "answer": old_answer}


# -- candidates, as measured to choose (same checks, library parse + validation) ------------

def msgspec_candidate() -> dict[str, Callable[..., Any]]:
    import hashlib

    class Hold(msgspec.Struct, frozen=True):
        seat_ids: list[str]
        user_id: str | None = None

    class Confirm(msgspec.Struct, frozen=True):
        payment_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,128}$")]

    class Pay(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
        return_url: str | None = None

    class Booking(msgspec.Struct):
        booking_id: str
        user_id: str
        show_id: int
        region: str
        seat_ids: list[str]
        status: str
        amount_paise: int
        payment_id: str | None
        created_at: str
        expires_at: str
        hold_token: int

    decode = msgspec.json.Decoder()
    encoder = msgspec.json.Encoder()

    def parse(raw: bytes) -> Any:
        if not raw.strip():
            return {}
        try:
            value = decode.decode(raw)
        except (msgspec.MsgspecError, RecursionError):
            raise Invalid from None
        if _depth(value) > 32:
            raise Invalid
        return value

    def hold(raw: bytes) -> list[str]:
        body = parse(raw)
        if isinstance(body, dict) and isinstance(body.get("seat_ids"), list) \
                and len(body["seat_ids"]) > CAP:
            raise Invalid
        m = msgspec.convert(body, Hold)
        if (m.user_id is not None and m.user_id != USER) or not m.seat_ids \
                or len(set(m.seat_ids)) != len(m.seat_ids):
            raise Invalid
        return sorted(m.seat_ids)

    def confirm(raw: bytes) -> tuple[str, str]:
        body = parse(raw)
        m = msgspec.convert(body, Confirm)
        canonical = json.dumps({"booking_id": ROW["id"], "body": body}, sort_keys=True)
        return m.payment_id, hashlib.sha256(canonical.encode()).hexdigest()

    def pay(raw: bytes) -> str | None:
        return msgspec.convert(parse(raw), Pay).return_url

    def answer(row: dict[str, Any]) -> bytes:
        return encoder.encode(Booking(
            row["id"], row["user_id"], row["show_id"], "north", list(row["seat_ids"]),
            row["status"], row["amount_paise"], row["payment_id"],
            row["created_at"].isoformat(), row["expires_at"].isoformat(), row["fence_token"]))

    return {"hold": hold, "confirm": confirm, "pay": pay, "answer": answer}


def pydantic_candidate() -> dict[str, Callable[..., Any]]:
    import hashlib

    class Hold(BaseModel):
        model_config = ConfigDict(frozen=True)
        seat_ids: list[StrictStr]
        user_id: StrictStr | None = None

    class Confirm(BaseModel):
        model_config = ConfigDict(frozen=True)
        payment_id: StrictStr = Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")

    class Pay(BaseModel):
        model_config = ConfigDict(frozen=True, extra="forbid")
        return_url: StrictStr | None = None

    class Booking(BaseModel):
        booking_id: str
        user_id: str
        show_id: int
        region: str
        seat_ids: list[str]
        status: str
        amount_paise: int
        payment_id: str | None
        created_at: str
        expires_at: str
        hold_token: int

    def hold(raw: bytes) -> list[str]:
        body = old_parse(raw)
        if isinstance(body, dict) and isinstance(body.get("seat_ids"), list) \
                and len(body["seat_ids"]) > CAP:
            raise Invalid
        m = Hold.model_validate(body)
        if (m.user_id is not None and m.user_id != USER) or not m.seat_ids \
                or len(set(m.seat_ids)) != len(m.seat_ids):
            raise Invalid
        return sorted(m.seat_ids)

    def confirm(raw: bytes) -> tuple[str, str]:
        body = old_parse(raw)
        m = Confirm.model_validate(body)
        canonical = json.dumps({"booking_id": ROW["id"], "body": body}, sort_keys=True)
        return m.payment_id, hashlib.sha256(canonical.encode()).hexdigest()

    def pay(raw: bytes) -> str | None:
        return Pay.model_validate(old_parse(raw)).return_url

    def answer(row: dict[str, Any]) -> bytes:
        return Booking(
            booking_id=row["id"], user_id=row["user_id"], show_id=row["show_id"],
            region="north", seat_ids=list(row["seat_ids"]), status=row["status"],
            amount_paise=row["amount_paise"], payment_id=row["payment_id"],
            created_at=row["created_at"].isoformat(), expires_at=row["expires_at"].isoformat(),
            hold_token=row["fence_token"]).model_dump_json().encode()

    return {"hold": hold, "confirm": confirm, "pay": pay, "answer": answer}


def current() -> dict[str, Callable[..., Any]] | None:
    """What bookcluster does now: `node/body.py` parses, `booking/models.py` validates
    and encodes (None before models.py existed)."""
    try:
        from bookcluster.booking import models
        from bookcluster.node.body import parse_json
    except ImportError:
        return None
    region = "north"

    def hold(raw: bytes) -> Any:
        return models.HoldRequest.parse(parse_json(raw), CAP, USER)

    def confirm(raw: bytes) -> Any:
        return models.Confirmation.parse(ROW["id"], "key-1", parse_json(raw))

    def pay(raw: bytes) -> Any:
        return models.PayRequest.parse(parse_json(raw), TOPOLOGY)  # {}: no topology asked

    def answer(row: Any) -> bytes:
        return models.encode(models.booking_json(row, region))

    return {"hold": hold, "confirm": confirm, "pay": pay, "answer": answer}


TOPOLOGY: Any = None


# -- measuring -----------------------------------------------------------------------------

def timed_us(fn: Callable[[Any], Any], arg: Any, rounds: int) -> float:
    """Microseconds of process CPU per call, over `rounds` calls."""
    started = time.process_time()
    for _ in range(rounds):
        fn(arg)
    return (time.process_time() - started) / rounds * 1e6


def measure_all(candidates: dict[str, dict[str, Callable[..., Any]]], rounds: int,
                repeats: int) -> dict[str, dict[str, float]]:
    """The best of `repeats` batches per path, the batches of every candidate interleaved
    (so a busy moment of the machine does not favour one of them)."""
    cases = [(name, path, arg) for name in candidates
             for path, arg in (*BODIES.items(), ("answer", ROW))]
    for name, path, arg in cases:
        candidates[name][path](arg)  # warm up; and each must accept its body
    best: dict[tuple[str, str], float] = {}
    for _ in range(repeats):
        for name, path, arg in cases:
            us = timed_us(candidates[name][path], arg, rounds)
            best[name, path] = min(best.get((name, path), us), us)
    out: dict[str, dict[str, float]] = {}
    for name in candidates:
        passes = PASSES_BEFORE if name.startswith("before") else PASSES_AFTER
        row: dict[str, float] = {}
        for path in BODIES:
            row[f"{path}_body_us"] = round(best[name, path], 2)
            row[f"{path}_request_us"] = round(best[name, path] * passes[path] + (
                best[name, "answer"] if path == "hold" else 0.0), 2)
        row["answer_us"] = round(best[name, "answer"], 2)
        out[name] = row
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5_000, help="calls per batch")
    parser.add_argument("--repeats", type=int, default=7, help="batches per path (best kept)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    candidates = {"before (json + hand checks)": OLD,
                  "candidate pydantic v2": pydantic_candidate(),
                  "candidate msgspec": msgspec_candidate()}
    now = current()
    if now is not None:
        candidates["now (bookcluster.booking.models)"] = now
    results = measure_all(candidates, args.rounds, args.repeats)
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    keys = list(next(iter(results.values())))
    print(f"{'us of CPU':34}" + "".join(f"{k.removesuffix('_us'):>16}" for k in keys))
    for name, row in results.items():
        print(f"{name:34}" + "".join(f"{row[k]:>16.2f}" for k in keys))
    print("request = the body's passes on the node that serves it (a hold: 2 before, its turn "
          "and its view; 1 now), and for a hold its answer encoded (a confirm's sale answer "
          "is SQL's text); answer = a booking encoded (cancel, extend, get, lists)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
