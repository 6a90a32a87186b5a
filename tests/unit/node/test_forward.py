"""Forwarded-address vouching: the home node rate-limits by the client address only the
entry node saw, so it trusts an address only as a peer node signed it (`forward.py`)."""

from __future__ import annotations

import pytest

from bookcluster.node.forward import SIGNATURE_WINDOW_S, client_header, vouched_client

SECRET = b"forward-secret-of-this-cluster"
NOW = 1_800_000_000.0
PATH = "/booking/seats/42/lock"


def test_a_peer_nodes_header_vouches_for_the_address_it_signed() -> None:
    value = client_header(SECRET, "203.0.113.9", "POST", PATH, NOW)
    assert value.startswith(f"203.0.113.9 {int(NOW)} ")
    assert vouched_client(SECRET, value, "POST", PATH, NOW) == "203.0.113.9"
    assert vouched_client(SECRET, value, "POST", PATH, NOW + SIGNATURE_WINDOW_S) == \
        "203.0.113.9"
    ipv6 = client_header(SECRET, "2001:db8::7", "POST", PATH, NOW)
    assert vouched_client(SECRET, ipv6, "POST", PATH, NOW) == "2001:db8::7"


def test_no_header_vouches_for_nobody() -> None:
    assert vouched_client(SECRET, None, "POST", PATH, NOW) is None


def test_a_header_signed_with_another_key_is_not_trusted() -> None:
    value = client_header(b"a client's guess", "203.0.113.9", "POST", PATH, NOW)
    assert vouched_client(SECRET, value, "POST", PATH, NOW) is None


def test_a_header_is_bound_to_its_method_and_path_with_query() -> None:
    value = client_header(SECRET, "203.0.113.9", "POST", PATH + "?a=1", NOW)
    assert vouched_client(SECRET, value, "POST", PATH + "?a=1", NOW) == "203.0.113.9"
    assert vouched_client(SECRET, value, "POST", PATH + "?a=2", NOW) is None
    assert vouched_client(SECRET, value, "POST", "/booking/seats/43/lock?a=1", NOW) is None
    assert vouched_client(SECRET, value, "DELETE", PATH + "?a=1", NOW) is None


def test_a_header_from_outside_the_window_is_not_trusted() -> None:
    value = client_header(SECRET, "203.0.113.9", "POST", PATH, NOW)
    assert vouched_client(SECRET, value, "POST", PATH, NOW + SIGNATURE_WINDOW_S + 1) is None
    assert vouched_client(SECRET, value, "POST", PATH, NOW - SIGNATURE_WINDOW_S - 1) is None


def test_another_address_under_a_valid_signature_is_not_trusted() -> None:
    value = client_header(SECRET, "203.0.113.9", "POST", PATH, NOW)
    _, at, mac = value.split(" ")
    assert vouched_client(SECRET, f"198.51.100.1 {at} {mac}", "POST", PATH, NOW) is None


@pytest.mark.parametrize("value", [
    "", "203.0.113.9", "203.0.113.9 1800000000", "203.0.113.9  abc",
    "203.0.113.9 soon 00", "203.0.113.9 -1800000000 00", "203.0.113.9 1" + "0" * 12 + " 00",
    "203.0.113.9 \u00b9\u00b2 00",  # superscript digits: isdigit() says yes
    "203.0.113.9 1800000000 \u00e9\u00e9",  # a MAC that is not ASCII
    "\udcff 1800000000 00",  # a header byte that was not UTF-8 (surrogate-escaped)
])
def test_a_malformed_header_vouches_for_nobody_and_never_raises(value: str) -> None:
    assert vouched_client(SECRET, value, "POST", PATH, NOW) is None
