"""Account data (account-data.yaml) and room tags (tags.yaml), global and per room.

Only the owner may read or write; types the server controls (`m.fully_read`, set
through read markers, and `m.push_rules`, set through the push rules API) are 405.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.appstate import ACCOUNT_DATA
from homeserver.client.auth import get_requester
from homeserver.ephemeral.account_data import FULLY_READ_TYPE, IGNORED_USERS_TYPE
from homeserver.errors import MatrixError, bad_json, forbidden, not_found
from homeserver.http import json_response, path_param, read_json_body
from homeserver.ids import validate_room_id

SERVER_CONTROLLED = {FULLY_READ_TYPE: "read markers", "m.push_rules": "the push rules API"}
MAX_TYPE_LEN = 255
MAX_TAG_LEN = 255


def _type(text: str) -> str:
    if not text or len(text) > MAX_TYPE_LEN:
        raise ValueError("must be 1-255 characters")
    return text


def _owner(request: web.Request, requester_user: str) -> str:
    user_id = path_param(request, "userId")
    if user_id != requester_user:
        raise forbidden("Cannot access account data of other users")
    return user_id


def _room(request: web.Request) -> str:
    return path_param(request, "roomId", validate_room_id)


def _check_writable(data_type: str, body: dict[str, Any]) -> None:
    if data_type in SERVER_CONTROLLED:
        raise MatrixError(
            405,
            "M_BAD_JSON",
            f"Cannot set {data_type} through this API; use {SERVER_CONTROLLED[data_type]}",
        )
    if data_type == IGNORED_USERS_TYPE:
        ignored = body.get("ignored_users")
        if not isinstance(ignored, dict):
            raise bad_json("'ignored_users' must be an object")


async def _put(request: web.Request, *, in_room: bool) -> web.Response:
    """PUT one global (`in_room` False) or per-room account data entry of the owner."""
    requester = await get_requester(request)
    user_id = _owner(request, requester.user_id)
    room_id = _room(request) if in_room else ""
    data_type = path_param(request, "type", _type)
    body = await read_json_body(request)
    _check_writable(data_type, body)
    await request.config_dict[ACCOUNT_DATA].put(user_id, data_type, body, room_id)
    return json_response({})


async def _get(request: web.Request, *, in_room: bool) -> web.Response:
    """GET one global or per-room account data entry; 404 when it was never set."""
    requester = await get_requester(request)
    user_id = _owner(request, requester.user_id)
    room_id = _room(request) if in_room else ""
    data_type = path_param(request, "type", _type)
    content = await request.config_dict[ACCOUNT_DATA].get(user_id, data_type, room_id)
    if content is None:
        raise not_found("Account data not found")
    return json_response(content)


async def put_global(request: web.Request) -> web.Response:
    return await _put(request, in_room=False)


async def get_global(request: web.Request) -> web.Response:
    return await _get(request, in_room=False)


async def put_room(request: web.Request) -> web.Response:
    return await _put(request, in_room=True)


async def get_room(request: web.Request) -> web.Response:
    return await _get(request, in_room=True)


async def get_tags(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    user_id = _owner(request, requester.user_id)
    room_id = _room(request)
    tags = await request.config_dict[ACCOUNT_DATA].get_tags(user_id, room_id)
    return json_response({"tags": tags})


def _tag(text: str) -> str:
    if not text or len(text) > MAX_TAG_LEN:
        raise ValueError("must be 1-255 characters")
    return text


async def put_tag(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    user_id = _owner(request, requester.user_id)
    room_id = _room(request)
    tag = path_param(request, "tag", _tag)
    body = await read_json_body(request)
    order = body.get("order")
    if order is not None and (isinstance(order, bool) or not isinstance(order, int | float)):
        raise bad_json("'order' must be a number")
    await request.config_dict[ACCOUNT_DATA].set_tag(user_id, room_id, tag, body)
    return json_response({})


async def delete_tag(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    user_id = _owner(request, requester.user_id)
    room_id = _room(request)
    tag = path_param(request, "tag", _tag)
    await request.config_dict[ACCOUNT_DATA].remove_tag(user_id, room_id, tag)
    return json_response({})


def add_routes(app: web.Application) -> None:
    for prefix in ("/v3", "/r0"):
        app.router.add_put(prefix + "/user/{userId}/account_data/{type}", put_global)
        app.router.add_get(prefix + "/user/{userId}/account_data/{type}", get_global)
        room = prefix + "/user/{userId}/rooms/{roomId}"
        app.router.add_put(room + "/account_data/{type}", put_room)
        app.router.add_get(room + "/account_data/{type}", get_room)
        app.router.add_get(room + "/tags", get_tags)
        app.router.add_put(room + "/tags/{tag}", put_tag)
        app.router.add_delete(room + "/tags/{tag}", delete_tag)
