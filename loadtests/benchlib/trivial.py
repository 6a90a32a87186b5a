"""A trivial aiohttp app, served like an app node (uvloop, no access log): the yardstick
for seat-map reads. `python trivial.py --port N`; `GET /` and `/healthz` answer JSON."""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import web

BODY = b'{"ok": true, "service": "trivial"}'


async def handle(_: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_get("/", handle)
    app.router.add_get("/healthz", handle)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None,
                loop=uvloop.new_event_loop(), shutdown_timeout=1.0)


if __name__ == "__main__":
    main()
