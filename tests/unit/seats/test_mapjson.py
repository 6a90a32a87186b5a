"""A seat map's spliced JSON (`mapjson.py`) is the document the dict rendering describes."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from bookcluster.catalog import SeatInfo, ShowInfo
from bookcluster.seats.mapjson import encode_map
from bookcluster.seats.maps import SeatMaps
from bookcluster.seats.state import SeatState

SHOW = ShowInfo(7, "t-1", "s-1", "Audi 1", "m-1", "Jawan", "Hindi", "UA", 169,
                datetime(2026, 11, 24, 13, 0, tzinfo=UTC), "west")
LAYOUT = tuple(SeatInfo(f"{row}{n}", row, n, "GOLD" if row < "E" else "SILVER",
                        25000 if row < "E" else 18000, False)
               for row in "ABCDEFGHIJ" for n in range(1, 101))
NOW = 1_800_000_000_000


def dict_map(state: SeatState, layout: tuple[SeatInfo, ...]) -> dict[str, Any]:
    """What the map was before: `SeatMaps._render` (at NOW: `frozen_clock`)."""
    maps: Any = object.__new__(SeatMaps)
    rendered: dict[str, Any] = maps._render(SHOW, state, 0.0, "cache@west", layout)
    return rendered


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bookcluster.seats.maps.now_ms", lambda: NOW)


def head(state: SeatState) -> dict[str, Any]:
    return {"show_id": SHOW.id, "region": SHOW.region, "version": state.version,
            "as_of": datetime.fromtimestamp(0.0, UTC).isoformat(), "source": "cache@west"}


def test_a_map_with_every_status_is_the_same_document() -> None:
    rng = random.Random(7)
    ids = [s.seat_id for s in LAYOUT]
    for _ in range(20):
        picked = rng.sample(ids, 300)
        state = SeatState(version=rng.randrange(1, 10**6),
                          holds={s: (f"b{i}", NOW + rng.choice((-1, 1)) * rng.randrange(1, 10**5))
                                 for i, s in enumerate(picked[:150])},
                          booked={s: f"c{i}" for i, s in enumerate(picked[100:220])},
                          blocked=frozenset(picked[200:240]))
        body = encode_map(head(state), state, LAYOUT, NOW)
        assert json.loads(body) == dict_map(state, LAYOUT)
        assert json.loads(body)["seats"][0]["seat_id"] == "A1"


def test_an_empty_show_and_an_empty_layout() -> None:
    state = SeatState(version=1)
    body = json.loads(encode_map(head(state), state, LAYOUT, NOW))
    assert body == dict_map(state, LAYOUT)
    assert body["counts"] == {"AVAILABLE": 1000}
    assert json.loads(encode_map(head(state), state, (), NOW)) == dict_map(state, ())


def test_an_expired_hold_is_available() -> None:
    state = SeatState(version=2, holds={"A1": ("b1", NOW - 1), "A2": ("b2", NOW + 1)})
    seats = json.loads(encode_map(head(state), state, LAYOUT, NOW))["seats"]
    assert [s["status"] for s in seats[:3]] == ["AVAILABLE", "LOCKED", "AVAILABLE"]


def test_each_seat_says_where_it_is_and_whether_it_is_a_wheelchair_space() -> None:
    """The booking page draws aisles from `position` gaps and marks `accessible` seats."""
    layout = (SeatInfo("A1", "A", 1, "GOLD", 100, False, 1, True),
              SeatInfo("A2", "A", 2, "GOLD", 100, False, 3, False))
    state = SeatState(version=1)
    seats = json.loads(encode_map(head(state), state, layout, NOW))["seats"]
    assert [(s["position"], s["accessible"]) for s in seats] == [(1, True), (3, False)]
    assert seats == dict_map(state, layout)["seats"]
