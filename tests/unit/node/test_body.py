"""A request body is parsed safely and once; a hold's show is looked up once per request
(no server: requests are aiohttp's mocked ones, the catalog a counting stand-in)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bookcluster.errors import InvalidInput
from bookcluster.node.body import MAX_DEPTH, parse_json
from bookcluster.node.middlewares import _home_of
from bookcluster.node.typedefs import catalog_key, settings_key
from bookcluster.node.views import booking

HOSTILE = {
    "5000-digit integer": b'{"seat_ids": ["A1"], "n": ' + b"9" * 5000 + b"}",
    "1e400": b'{"seat_ids": ["A1"], "n": 1e400}',
    "nested 7000 deep": b"[" * 7000 + b"]" * 7000,
    "nested 900 deep in an unknown field": b'{"seat_ids": ["A1"], "n": ' + b"[" * 900
                                           + b"]" * 900 + b"}",
    "not UTF-8": b'{"user_id": "\xff\xfe", "seat_ids": ["A1"]}',
    "not UTF-8 in an unknown field": b'{"x": "\xff", "seat_ids": ["A1"]}',
    "NaN": b'{"seat_ids": ["A1"], "n": NaN}',
    "Infinity": b'{"seat_ids": ["A1"], "n": -Infinity}',
    "not JSON": b"{not json",
    "two values": b"{} {}",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_bodies_are_invalid_input(name: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_json(HOSTILE[name])
    assert refused.value.status == 422 and refused.value.message


def test_bodies_parse_to_python_values_up_to_the_depth_cap() -> None:
    assert parse_json(b'{"a": [1, 2.5, null, true, "\\u00e9"], "b": 123456789012345678901}') \
        == {"a": [1, 2.5, None, True, "\u00e9"], "b": 123456789012345678901}
    deep = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert parse_json(deep) is not None
    with pytest.raises(InvalidInput):
        parse_json(b"[" + deep + b"]")


class CountingCatalog:
    def __init__(self) -> None:
        self.placement = object()
        self.looked_up = 0

    async def show(self, show_id: int) -> Any:
        self.looked_up += 1
        return SimpleNamespace(id=show_id, region="south")

    def region_of_show(self, show_id: int) -> str:
        self.looked_up += 1
        return "south"


def hold_request(catalog: CountingCatalog) -> web.Request:
    app = web.Application()
    app[catalog_key] = catalog  # type: ignore[assignment]
    app[settings_key] = SimpleNamespace(  # type: ignore[assignment]
        topology=SimpleNamespace(settings=SimpleNamespace(max_seats_per_booking=10)))
    return make_mocked_request("POST", "/booking/seats/7/lock", match_info={"show_id": "7"},
                               app=app)


async def test_a_hold_looks_its_show_up_once_until_the_map_changes() -> None:
    catalog = CountingCatalog()
    request = hold_request(catalog)
    first = await booking.show_of(request)  # routing
    assert await booking.show_of(request) is first  # the turn, the view
    assert await booking._show_region(request) == "south"
    assert _home_of(request) == "south"  # the answer's home headers
    assert catalog.looked_up == 1
    catalog.placement = object()  # a newer epoch adopted (a MOVED write is routed again)
    await booking.show_of(request)
    assert catalog.looked_up == 2


async def test_a_hold_body_is_parsed_and_validated_once(monkeypatch: Any) -> None:
    parsed: list[int] = []

    async def json_body(request: web.Request) -> Any:
        parsed.append(1)
        return {"seat_ids": ["B1", "A1"]}

    monkeypatch.setattr(booking, "json_body", json_body)
    request, caller = hold_request(CountingCatalog()), SimpleNamespace(user="u")
    first = await booking._hold_body(request, caller)  # type: ignore[arg-type]
    assert await booking._hold_body(request, caller) is first  # type: ignore[arg-type]
    assert first.seat_ids == ["A1", "B1"] and parsed == [1]


async def test_an_invalid_hold_body_is_refused_alike_each_time_it_is_asked(
        monkeypatch: Any) -> None:
    parsed: list[int] = []

    async def json_body(request: web.Request) -> Any:
        parsed.append(1)
        return {"seat_ids": ["A1", "A1"]}

    monkeypatch.setattr(booking, "json_body", json_body)
    request, caller = hold_request(CountingCatalog()), SimpleNamespace(user="u")
    for _ in range(2):  # the turn lets it pass; the view raises it
        with pytest.raises(InvalidInput) as refused:
            await booking._hold_body(request, caller)  # type: ignore[arg-type]
        assert refused.value.body() == {"error": "invalid_input",
                                         "message": "seat_ids has duplicates",
                                         "field": "seat_ids", "seats": ["A1"]}
    assert parsed == [1]
