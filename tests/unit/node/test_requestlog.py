"""The access log's fields and trace ids (`bookcluster/node/requestlog.py`)."""

from __future__ import annotations

import json
import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bookcluster.node import requestlog

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_the_callers_trace_id_is_kept_and_passed_on() -> None:
    request = make_mocked_request("GET", "/", headers={
        "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"})
    assert requestlog.trace_id(request) == TRACE
    onward = requestlog.traceparent(TRACE)
    assert onward.startswith(f"00-{TRACE}-") and onward.endswith("-01")
    assert onward != requestlog.traceparent(TRACE)  # a new span id each call


@pytest.mark.parametrize("header", [None, "garbage", f"00-{'0' * 32}-00f067aa0ba902b7-01"])
def test_without_a_valid_trace_a_request_gets_a_new_one(header: str | None) -> None:
    request = make_mocked_request("GET", "/", headers={"traceparent": header} if header else {})
    found = requestlog.trace_id(request)
    assert len(found) == 32 and found != "0" * 32
    assert requestlog.trace_id(request) == found  # once per request


def test_a_forwarded_hold_line_names_its_home_booking_and_trace() -> None:
    request = make_mocked_request("POST", "/booking/seats/7/lock?x=secret")
    request[requestlog.FORWARDED_TO] = "west"
    response = web.Response(status=201, headers={requestlog.BOOKING_HEADER: "b-1"})
    line = requestlog.entry(request, "/booking/seats/{show_id}/lock", 201, 0.0123,
                            "north", None, False, response)
    assert {k: v for k, v in line.items() if k not in ("ts", "trace_id")} == {
        "method": "POST", "route": "/booking/seats/{show_id}/lock", "status": 201,
        "duration_ms": 12.3, "region": "north", "home": "west", "forwarded": "out",
        "booking_id": "b-1"}
    assert "secret" not in json.dumps(line)


def test_a_line_received_from_a_peer_says_in() -> None:
    request = make_mocked_request("GET", "/")
    line = requestlog.entry(request, "unmatched", 404, 0.001, "west", "west", True, None)
    assert line["forwarded"] == "in" and line["booking_id"] is None


def test_written_as_one_json_line_only_when_on(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.access")
    caplog.set_level(logging.INFO, logger="test.access")
    requestlog.AccessLog(True, logger).write({"status": 200, "route": "/x"})
    [record] = caplog.records
    assert json.loads(record.getMessage()) == {"status": 200, "route": "/x"}
    assert "\n" not in record.getMessage()
    assert not requestlog.AccessLog(False).on
