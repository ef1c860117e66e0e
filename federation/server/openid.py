"""GET /_matrix/federation/v1/openid/userinfo (server-server openid.yaml, no X-Matrix
auth): exchanges an OpenID token issued by our client API for the user's ID."""

from __future__ import annotations

from aiohttp import web

from homeserver.appstate import OPENID_TOKENS
from homeserver.errors import MatrixError
from homeserver.http import json_response, query_param


async def get_userinfo(request: web.Request) -> web.Response:
    token = query_param(request, "access_token")
    user_id = request.config_dict[OPENID_TOKENS].user_for(token) if token else None
    if user_id is None:
        raise MatrixError(401, "M_UNKNOWN_TOKEN", "Access token unknown or expired")
    return json_response({"sub": user_id})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/openid/userinfo", get_userinfo)
