"""`POST /auth/dev-sign-in`: a token for any user name, for the local cluster's web page.

Only on a node started with `--dev-sign-in`, which the local launcher passes when
every node binds loopback (and a node bound elsewhere refuses at start); otherwise
404. Whoever can reach such a node becomes any user, the operator included, so a
real deployment never has it and its users get tokens from its identity provider.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from bookcluster.booking import ids
from bookcluster.errors import InvalidInput, NotFound
from bookcluster.node import access
from bookcluster.node.answers import answer
from bookcluster.node.auth import OPERATOR, mint
from bookcluster.node.body import json_body
from bookcluster.node.typedefs import settings_key

TOKEN_TTL_S = 8 * 3600


@access.public
async def dev_sign_in(request: web.Request) -> web.Response:
    settings = request.app[settings_key]
    topology = settings.topology
    if not settings.dev_sign_in:
        raise NotFound("development sign-in is off in this cluster: get a token from its "
                       "identity provider")
    body = await json_body(request)
    if not isinstance(body, dict):
        raise InvalidInput('body must be {"user": str, "roles"?: ["operator"]}')
    user, roles = body.get("user"), body.get("roles", [])
    if not isinstance(user, str) or not ids.USER_ID.match(user):
        raise InvalidInput("user must be 1-64 characters of [A-Za-z0-9_.@:-]", field="user")
    if not isinstance(roles, list) or not all(r == OPERATOR for r in roles):
        raise InvalidInput(f"roles may only hold {OPERATOR!r}", field="roles")
    granted = (OPERATOR,) if roles else ()
    token = mint(topology, user, TOKEN_TTL_S, granted)
    expires = datetime.now(UTC) + timedelta(seconds=TOKEN_TTL_S)
    return answer({"token": token, "user": user, "roles": list(granted),
                              "expires_at": expires.isoformat()})
