"""`GET /shows/{show_id}/live`: a WebSocket of seat changes (see `live.py`)."""

from __future__ import annotations

import json

from aiohttp import WSMsgType, web

from region_node import access, ids
from region_node.typedefs import catalog_key, hub_key, metrics_key


@access.public
async def live(request: web.Request) -> web.WebSocketResponse:
    show = await request.app[catalog_key].show(ids.show_id(request.match_info["show_id"]))
    hub = request.app[hub_key]
    gauge = request.app[metrics_key].live_sockets
    ws = web.WebSocketResponse(heartbeat=30.0)
    await ws.prepare(request)
    sock = hub.join(show.id, ws)
    gauge.inc()
    try:
        await hub.sync(sock)
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                kind = json.loads(message.data).get("type")
            except (ValueError, AttributeError):
                kind = None
            if kind == "resync":
                await hub.sync(sock)
            else:
                await ws.send_str(json.dumps({"type": "error", "error": "unknown_message",
                                              "message": 'send {"type": "resync"} or nothing'}))
    finally:
        hub.leave(sock)
        gauge.dec()
    return ws
