"""`GET /shows/{show_id}/live`: a WebSocket of seat changes (see `live.py`)."""

from __future__ import annotations

import json

from aiohttp import WSMsgType, web

from bookcluster.booking import ids
from bookcluster.node import access
from bookcluster.node.typedefs import catalog_key, hub_key, metrics_key

# Clients only ever send {"type": "resync"}; a longer message closes the socket (1009).
MAX_MESSAGE_BYTES = 4 * 1024


def _kind(text: str) -> object:
    """The `type` of a client message; None for anything else, hostile JSON included."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):  # also: too many digits, nested too deeply
        return None
    return message.get("type") if isinstance(message, dict) else None


@access.public
async def live(request: web.Request) -> web.WebSocketResponse:
    show = await request.app[catalog_key].show(ids.show_id(request.match_info["show_id"]))
    hub = request.app[hub_key]
    gauge = request.app[metrics_key].live_sockets
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    sock = hub.join(show.id, ws)
    gauge.inc()
    try:
        await hub.sync(sock)
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            if _kind(message.data) == "resync":
                await hub.sync(sock)
            else:
                try:
                    await ws.send_str(json.dumps({"type": "error", "error": "unknown_message",
                                                  "message": 'send {"type": "resync"} or nothing'}))
                except ConnectionError:  # it sent that and hung up: nobody to answer
                    break
    finally:
        hub.leave(sock)
        gauge.dec()
    return ws
