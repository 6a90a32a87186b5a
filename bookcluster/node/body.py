"""Request bodies: the one place they are read, bounded and parsed as JSON.

A body is read whole (at most `MAX_BODY_BYTES`, also when it comes chunked:
the app's `client_max_size` makes aiohttp count while it reads) within the
node's body timeout, decoded as strict UTF-8 (RFC 8259: JSON on the wire is
UTF-8) and parsed. Every way a hostile body can break the parser is the
caller's mistake, a 422 `invalid_input`, never a 500: syntax errors, numbers
past what the parser carries (a 5000-digit integer, 1e400), nesting deeper than
the interpreter's recursion limit (`RecursionError`), bytes that are not UTF-8,
and NaN/Infinity (not JSON; they would reach the database).
Nesting is capped far below the recursion limit too: a body that just parses
would still break code that walks it again (the confirm path re-serialises it).
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from aiohttp import web

from bookcluster.errors import BodyTimeout, BodyTooLarge, InvalidInput
from bookcluster.node.typedefs import settings_key

MAX_BODY_BYTES = 16 * 1024
MAX_DEPTH = 32  # our bodies are flat; a list in an object is depth 2


def _too_large() -> BodyTooLarge:
    return BodyTooLarge(f"body larger than {MAX_BODY_BYTES} bytes", limit=MAX_BODY_BYTES)


async def read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise _too_large()  # refused before a byte of it is read
    timeout = request.app[settings_key].body_timeout_s
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise BodyTimeout(f"the body did not arrive within {timeout:g} s") from None
    except web.HTTPRequestEntityTooLarge:
        raise _too_large() from None


def _depth(value: Any) -> int:
    """How deeply `value` nests, counted without recursion (and stopping past the cap)."""
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= MAX_DEPTH:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1)
                         for child in (item.values() if isinstance(item, dict) else item))
    return deepest


_decoder = msgspec.json.Decoder()


def parse_json(raw: bytes) -> Any:
    """The body as Python values (msgspec's parser: `loadtests/body_cpu.py`); every
    field is parsed, also those no model reads, so none of them can hide a hostile value."""
    try:
        value = _decoder.decode(raw)
    except RecursionError:
        raise InvalidInput(f"body is nested deeper than {MAX_DEPTH} levels") from None
    except msgspec.ValidationError:  # an integer or a float past what msgspec carries
        raise InvalidInput("body has a number JSON cannot carry (too many digits, "
                           "NaN or Infinity)") from None
    except msgspec.DecodeError as exc:
        if "UTF-8" in str(exc):
            raise InvalidInput("body is not UTF-8") from None
        raise InvalidInput(f"body is not valid JSON: {exc}") from None
    if _depth(value) > MAX_DEPTH:
        raise InvalidInput(f"body is nested deeper than {MAX_DEPTH} levels")
    return value


async def json_body(request: web.Request) -> Any:
    """The parsed body; an empty body is `{}`, so a missing field is named by validation."""
    raw = await read_body(request)
    return parse_json(raw) if raw.strip() else {}
