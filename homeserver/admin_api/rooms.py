"""/_synapse/admin room endpoints: the room list and one room's details, members,
state, messages and extremities; blocking, deleting (with status), purging history,
granting room admin and joining users."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.admin.shutdown import ShutdownParams
from homeserver.appstate import ADMIN_ROOMS, ROOM_SHUTDOWN
from homeserver.client.validate import optional_str
from homeserver.errors import MatrixError, bad_json, invalid_param, not_found
from homeserver.http import json_response, path_param, query_param, read_json_body
from homeserver.ids import is_valid_server_name
from homeserver.rooms.event_filter import RoomEventFilter
from homeserver.rooms.pagination import RoomToken
from homeserver.storage.admin_rooms import ROOM_ORDER_COLUMNS, RoomFilter

from .common import (
    body_bool,
    body_int,
    body_user_id,
    bool_param,
    choice_param,
    direction_param,
    event_id_path,
    int_param,
    page_params,
    require_admin,
    required_int,
    room_id_or_alias_path,
    room_id_path,
    str_param,
)

MAX_MESSAGES_LIMIT = 1000
MAX_ROOM_NAME = 255
MAX_MESSAGE = 65_536


async def list_rooms(request: web.Request) -> web.Response:
    await require_admin(request)
    page = page_params(request)
    order_by = choice_param(request, "order_by", ROOM_ORDER_COLUMNS, "name") or "name"
    room_filter = RoomFilter(
        search_term=str_param(request, "search_term"),
        public_rooms=bool_param(request, "public_rooms"),
        empty_rooms=bool_param(request, "empty_rooms"),
    )
    reverse = direction_param(request) == "b"
    body = await request.config_dict[ADMIN_ROOMS].list_rooms(page, room_filter, order_by, reverse)
    return json_response(body)


async def room_details(request: web.Request) -> web.Response:
    await require_admin(request)
    return json_response(await request.config_dict[ADMIN_ROOMS].details(room_id_path(request)))


async def room_members(request: web.Request) -> web.Response:
    await require_admin(request)
    return json_response(await request.config_dict[ADMIN_ROOMS].members(room_id_path(request)))


async def room_state(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    room_id = room_id_path(request)
    event_type = str_param(request, "type", max_len=255)
    return json_response(
        await request.config_dict[ADMIN_ROOMS].state(admin.user_id, room_id, event_type)
    )


def _limit(default: int) -> Any:
    def parse(value: str) -> int:
        number = int(value)
        if number < 0:
            raise ValueError("must not be negative")
        return min(number, MAX_MESSAGES_LIMIT)

    return parse


def _direction(value: str) -> str:
    if value not in ("f", "b"):
        raise ValueError("must be 'f' or 'b'")
    return value


async def room_messages(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    room_id = room_id_path(request)
    body = await request.config_dict[ADMIN_ROOMS].messages(
        admin.user_id,
        room_id,
        from_token=query_param(request, "from", RoomToken.parse),
        to_token=query_param(request, "to", RoomToken.parse),
        direction=query_param(request, "dir", _direction, default="f"),
        limit=query_param(request, "limit", _limit(10), default=10),
        event_filter=RoomEventFilter.from_query(query_param(request, "filter")),
    )
    return json_response(body)


async def room_context(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    room_id = room_id_path(request)
    event_id = event_id_path(request)
    limit = query_param(request, "limit", _limit(10), default=10)
    event_filter = RoomEventFilter.from_query(query_param(request, "filter"))
    body = await request.config_dict[ADMIN_ROOMS].context(
        admin.user_id, room_id, event_id, limit, event_filter
    )
    return json_response(body)


async def room_timestamp_to_event(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    room_id = room_id_path(request)
    ts = required_int(request, "ts")
    direction: Any = direction_param(request, "f")
    body = await request.config_dict[ADMIN_ROOMS].timestamp_to_event(
        admin.user_id, room_id, ts, direction
    )
    return json_response(body)


async def get_extremities(request: web.Request) -> web.Response:
    await require_admin(request)
    rooms = request.config_dict[ADMIN_ROOMS]
    room_id = await rooms.resolve(room_id_or_alias_path(request))
    return json_response(await rooms.forward_extremities(room_id))


async def delete_extremities(request: web.Request) -> web.Response:
    await require_admin(request)
    rooms = request.config_dict[ADMIN_ROOMS]
    room_id = await rooms.resolve(room_id_or_alias_path(request))
    return json_response(await rooms.delete_forward_extremities(room_id))


async def get_block(request: web.Request) -> web.Response:
    await require_admin(request)
    return json_response(await request.config_dict[ADMIN_ROOMS].get_block(room_id_path(request)))


async def put_block(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    room_id = room_id_path(request)
    body = await read_json_body(request)
    block = body_bool(body, "block")
    if block is None:
        raise MatrixError(400, "M_BAD_JSON", "Param 'block' must be a boolean")
    return json_response(
        await request.config_dict[ADMIN_ROOMS].set_block(admin.user_id, room_id, block)
    )


async def make_room_admin(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    rooms = request.config_dict[ADMIN_ROOMS]
    room_id = await rooms.resolve(room_id_or_alias_path(request))
    body = await read_json_body(request, allow_empty=True)
    user_id = body_user_id(body) if "user_id" in body else admin.user_id
    return json_response(await rooms.make_room_admin(room_id, user_id))


async def join_user(request: web.Request) -> web.Response:
    await require_admin(request)
    rooms = request.config_dict[ADMIN_ROOMS]
    target = room_id_or_alias_path(request, "room_id")
    servers = request.query.getall("server_name", [])
    if any(not is_valid_server_name(s) for s in servers):
        raise invalid_param("Invalid server_name")
    body = await read_json_body(request)
    user_id = body_user_id(body)
    room_id = await rooms.resolve(target)
    return json_response(await rooms.join_user(room_id, user_id, list(servers)))


def _shutdown_params(requester: str, body: dict[str, Any]) -> ShutdownParams:
    new_room_user_id = (
        body_user_id(body, "new_room_user_id") if body.get("new_room_user_id") else None
    )
    return ShutdownParams(
        requester=requester,
        block=bool(body_bool(body, "block", False)),
        purge=bool(body_bool(body, "purge", True)),
        force_purge=bool(body_bool(body, "force_purge", False)),
        new_room_user_id=new_room_user_id,
        room_name=optional_str(body, "room_name", max_len=MAX_ROOM_NAME),
        message=optional_str(body, "message", max_len=MAX_MESSAGE),
    )


async def delete_room_v2(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    room_id = room_id_path(request)
    params = _shutdown_params(admin.user_id, await read_json_body(request))
    delete_id = await request.config_dict[ROOM_SHUTDOWN].start(room_id, params)
    return json_response({"delete_id": delete_id})


async def delete_room_v1(request: web.Request) -> web.Response:
    """The old synchronous form: answers once the deletion finished."""
    admin = await require_admin(request)
    room_id = room_id_path(request)
    params = _shutdown_params(admin.user_id, await read_json_body(request))
    shutdown = request.config_dict[ROOM_SHUTDOWN]
    delete_id = await shutdown.start(room_id, params)
    status = await shutdown.wait(delete_id)
    if status["status"] == "failed":
        raise MatrixError(500, "M_UNKNOWN", status.get("error") or "Room deletion failed")
    return json_response(status["shutdown_room"])


async def delete_status_by_room(request: web.Request) -> web.Response:
    await require_admin(request)
    results = await request.config_dict[ROOM_SHUTDOWN].delete_status(room_id_path(request))
    if not results:
        raise not_found("No delete task for room")
    return json_response({"results": results})


async def delete_status_by_id(request: web.Request) -> web.Response:
    await require_admin(request)
    delete_id = str(path_param(request, "delete_id"))
    return json_response(await request.config_dict[ROOM_SHUTDOWN].delete_status_by_id(delete_id))


async def purge_history(request: web.Request) -> web.Response:
    await require_admin(request)
    room_id = room_id_path(request)
    body = await read_json_body(request, allow_empty=True)
    event_id = request.match_info.get("event_id") or body.get("purge_up_to_event_id")
    if event_id is not None and not isinstance(event_id, str):
        raise bad_json("'purge_up_to_event_id' must be a string")
    ts = body_int(body, "purge_up_to_ts")
    if event_id is None and ts is None:
        raise MatrixError(400, "M_UNKNOWN", "must specify purge_up_to_event_id or purge_up_to_ts")
    purge_id = await request.config_dict[ROOM_SHUTDOWN].start_purge_history(
        room_id,
        up_to_event_id=event_id,
        up_to_ts=ts,
        delete_local_events=bool(body_bool(body, "delete_local_events", False)),
    )
    return json_response({"purge_id": purge_id})


async def purge_history_status(request: web.Request) -> web.Response:
    await require_admin(request)
    purge_id = str(path_param(request, "purge_id"))
    return json_response(await request.config_dict[ROOM_SHUTDOWN].purge_status(purge_id))


async def scheduled_tasks(request: web.Request) -> web.Response:
    await require_admin(request)
    jobs = await request.config_dict[ROOM_SHUTDOWN].tasks(
        action=str_param(request, "action_name", 255),
        resource_id=str_param(request, "resource_id", 255),
        status=choice_param(
            request, "status", ("scheduled", "active", "complete", "cancelled", "failed"), None
        ),
        max_timestamp=int_param(request, "max_timestamp"),
    )
    return json_response({"scheduled_tasks": jobs})


def add_routes(admin: web.Application) -> None:
    r = admin.router
    r.add_get("/v1/rooms", list_rooms)
    r.add_get("/v1/rooms/{room_id}", room_details)
    r.add_delete("/v1/rooms/{room_id}", delete_room_v1)
    r.add_get("/v2/rooms/delete_status/{delete_id}", delete_status_by_id)
    r.add_delete("/v2/rooms/{room_id}", delete_room_v2)
    r.add_get("/v2/rooms/{room_id}/delete_status", delete_status_by_room)
    r.add_get("/v1/rooms/{room_id}/members", room_members)
    r.add_get("/v1/rooms/{room_id}/state", room_state)
    r.add_get("/v1/rooms/{room_id}/messages", room_messages)
    r.add_get("/v1/rooms/{room_id}/context/{event_id}", room_context)
    r.add_get("/v1/rooms/{room_id}/timestamp_to_event", room_timestamp_to_event)
    r.add_get("/v1/rooms/{room_id}/forward_extremities", get_extremities)
    r.add_delete("/v1/rooms/{room_id}/forward_extremities", delete_extremities)
    r.add_get("/v1/rooms/{room_id}/block", get_block)
    r.add_put("/v1/rooms/{room_id}/block", put_block)
    r.add_post("/v1/rooms/{room_id}/make_room_admin", make_room_admin)
    r.add_post("/v1/join/{room_id}", join_user)
    r.add_post("/v1/purge_history/{room_id}", purge_history)
    r.add_post("/v1/purge_history/{room_id}/{event_id}", purge_history)
    r.add_get("/v1/purge_history_status/{purge_id}", purge_history_status)
    r.add_get("/v1/scheduled_tasks", scheduled_tasks)
