"""Every JSON answer of a node is encoded here, by one encoder (msgspec: compact, about
half the CPU of `json.dumps`), so all answers look alike: a confirm's once came out
spaced (`json.dumps`) beside the compact holds and seat maps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from bookcluster.booking.models import encode


def answer(body: Any, status: int = 200,
           headers: Mapping[str, str] | None = None) -> web.Response:
    """As `web.json_response`, encoded by `models.encode`."""
    return web.Response(body=encode(body), status=status, headers=headers,
                        content_type="application/json", charset="utf-8")


def stored_answer(text: str, status: int) -> web.Response:
    """An answer kept as JSON text (a confirm's, replayed byte for byte)."""
    return web.Response(text=text, status=status, content_type="application/json")
