"""Profile endpoints (profile.yaml, v1.16 extended profiles).

GET /profile/{userId}, GET/PUT/DELETE /profile/{userId}/{keyName}. Reading needs no
access token (Synapse's default) unless `require_auth_for_profile_requests`, and with
`limit_profile_requests_to_users_who_share_rooms` only users sharing a room with the
profile's owner may read it; changing needs the user's own token.
"""

from __future__ import annotations

from aiohttp import web

from homeserver.appstate import APP_SERVICE_SENDER, CONFIG, PROFILES, STORES, Mounts
from homeserver.client.auth import get_requester
from homeserver.errors import MatrixError, missing_param
from homeserver.http import json_response, path_param, read_json_body
from homeserver.ids import validate_user_id


def _user_id(request: web.Request) -> str:
    return str(path_param(request, "user_id", validate_user_id))


async def _check_may_read(request: web.Request, user_id: str) -> None:
    config = request.config_dict[CONFIG]
    if not (config.profiles_need_auth or config.profiles_need_shared_room):
        return
    requester = await get_requester(request, allow_guest=True)
    if not config.profiles_need_shared_room or requester.user_id == user_id:
        return
    current = request.config_dict[STORES].current_state
    mine = {
        m.room_id
        for m in await current.get_memberships_for_user(requester.user_id)
        if m.membership == "join"
    }
    theirs = await current.get_memberships_for_user(user_id)
    if not any(m.membership == "join" and m.room_id in mine for m in theirs):
        raise MatrixError(403, "M_FORBIDDEN", "You don't have permission to access that profile")


async def get_profile(request: web.Request) -> web.Response:
    user_id = _user_id(request)
    await _check_may_read(request, user_id)
    profiles = request.config_dict[PROFILES]
    try:
        return json_response(await profiles.get_profile(user_id))
    except MatrixError as e:
        # A user of an appservice's namespace may be made on demand: ask, then look again.
        sender = request.config_dict.get(APP_SERVICE_SENDER)
        if e.status != 404 or sender is None or not await sender.query_user(user_id):
            raise
        return json_response(await profiles.get_profile(user_id))


async def get_field(request: web.Request) -> web.Response:
    user_id = _user_id(request)
    await _check_may_read(request, user_id)
    key = str(path_param(request, "key"))
    value = await request.config_dict[PROFILES].get_field(user_id, key)
    return json_response({key: value})


def _check_changeable(request: web.Request, key: str) -> None:
    """enable_set_displayname / enable_set_avatar_url: off where something else owns
    profiles (Synapse's answer: 400 M_FORBIDDEN)."""
    config = request.config_dict[CONFIG]
    if (key == "displayname" and not config.set_displayname) or (
        key == "avatar_url" and not config.set_avatar_url
    ):
        what = "display name" if key == "displayname" else "avatar"
        raise MatrixError(400, "M_FORBIDDEN", f"Changing the {what} is disabled on this server")


async def put_field(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    user_id = _user_id(request)
    key = str(path_param(request, "key"))
    body = await read_json_body(request)
    if key not in body:
        raise missing_param(f"Missing '{key}' in the request body")
    _check_changeable(request, key)
    await request.config_dict[PROFILES].set_field(requester.user_id, user_id, key, body[key])
    return json_response({})


async def delete_field(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    user_id = _user_id(request)
    key = str(path_param(request, "key"))
    _check_changeable(request, key)
    await request.config_dict[PROFILES].delete_field(requester.user_id, user_id, key)
    return json_response({})


def setup(mounts: Mounts) -> None:
    router = mounts.client.router
    for prefix in ("/v3", "/r0"):
        router.add_get(prefix + "/profile/{user_id}", get_profile)
        router.add_get(prefix + "/profile/{user_id}/{key}", get_field)
        router.add_put(prefix + "/profile/{user_id}/{key}", put_field)
        router.add_delete(prefix + "/profile/{user_id}/{key}", delete_field)
