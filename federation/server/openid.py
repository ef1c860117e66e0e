"""GET /_matrix/federation/v1/openid/userinfo (server-server openid.yaml, no X-Matrix
auth): exchanges an OpenID token issued by our client API for the user's ID."""

from __future__ import annotations

from aiohttp import web

from homeserver.appstate import OPENID_TOKENS
from homeserver.errors import MatrixError
from homeserver.http import json_response, query_param


async def get_userinfo(request: web.Request) -> web.Response:
    token = query_param(request, "access_token")
    tokens = request.config_dict.get(OPENID_TOKENS)
    user_id = tokens.user_for(token) if tokens is not None and token else None
    if user_id is None:
        raise MatrixError(401, "M_UNKNOWN_TOKEN", "Access token unknown or expired")
    return json_response({"sub": user_id})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/openid/userinfo", get_userinfo)
