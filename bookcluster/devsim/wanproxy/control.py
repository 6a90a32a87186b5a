"""The control API of a running proxy (loopback only)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bookcluster.devsim.wanproxy.links import InvalidInput, UnknownLink, check_delay, check_mode

if TYPE_CHECKING:
    from bookcluster.devsim.wanproxy.proxy import ProxySet

PROXIES: web.AppKey[ProxySet] = web.AppKey("proxies")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, code: str, message: str, **details: Any) -> web.Response:
    return web.json_response({"error": code, "message": message, **details}, status=status)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except UnknownLink as exc:
        return _error(404, "not_found", str(exc), link=exc.name)
    except InvalidInput as exc:
        return _error(422, "invalid_input", str(exc), field=exc.field)
    except web.HTTPNotFound:
        return _error(404, "not_found", f"no route {request.path}")
    except web.HTTPMethodNotAllowed:
        return _error(405, "method_not_allowed", f"{request.method} {request.path}")


async def _change(request: web.Request) -> dict[str, Any]:
    """The body of a POST: `{"delay_ms"?: int, "mode"?: str}`, checked."""
    try:
        body = await request.json()
    except ValueError:
        raise InvalidInput("body", "must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object")
    for key in body:
        if key not in ("delay_ms", "mode"):
            raise InvalidInput(str(key), "is not a setting (delay_ms, mode)")
    if "delay_ms" in body:
        check_delay(body["delay_ms"])
    if "mode" in body:
        check_mode(body["mode"])
    return body


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _list_links(request: web.Request) -> web.Response:
    return web.json_response(request.app[PROXIES].describe())


async def _update_link(request: web.Request) -> web.Response:
    proxies = request.app[PROXIES]
    proxies.link(request.match_info["name"])  # an unknown link is a 404 whatever the body
    described = await proxies.update(request.match_info["name"], **await _change(request))
    return web.json_response(described)


async def _update_all(request: web.Request) -> web.Response:
    proxies = request.app[PROXIES]
    return web.json_response(await proxies.update_all(**await _change(request)))


def control_app(proxies: ProxySet) -> web.Application:
    app = web.Application(middlewares=[_json_errors])
    app[PROXIES] = proxies
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/links", _list_links)
    app.router.add_post("/links", _update_all)
    app.router.add_post("/links/{name}", _update_link)
    return app


