"""POST /user/{userId}/openid/request_token (openid.yaml): an OpenID token that a
third party exchanges at our federation `/openid/userinfo` for the user's ID."""

from __future__ import annotations

from aiohttp import web

from homeserver.accounts.openid import OpenIdTokens
from homeserver.appstate import CONFIG, OPENID_TOKENS, Mounts
from homeserver.client.auth import get_requester
from homeserver.errors import forbidden
from homeserver.http import json_response, path_param, read_json_body
from homeserver.ids import validate_user_id


async def request_token(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    user_id = path_param(request, "user_id", validate_user_id)
    await read_json_body(request)  # an empty object, reserved for future expansion
    if user_id != requester.user_id:
        raise forbidden("Cannot request OpenID tokens for other users")
    tokens = request.config_dict[OPENID_TOKENS]
    return json_response(
        {
            "access_token": tokens.issue(user_id),
            "token_type": "Bearer",
            "matrix_server_name": request.config_dict[CONFIG].server_name,
            "expires_in": tokens.lifetime_s,
        }
    )


def setup(mounts: Mounts) -> None:
    if OPENID_TOKENS not in mounts.root:
        mounts.root[OPENID_TOKENS] = OpenIdTokens()
    for prefix in ("/v3", "/r0"):
        mounts.client.router.add_post(
            prefix + "/user/{user_id}/openid/request_token", request_token
        )
