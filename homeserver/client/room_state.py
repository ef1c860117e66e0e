"""Room state endpoints: GET /rooms/{id}/state, GET and PUT /state/{type}/{stateKey}.

The state key may be empty: `/state/{type}`, `/state/{type}/` and `/state/{type}/{key}`
all work. PUT has no transaction ID; sending the same content again is a no-op that
returns the current event's ID.
"""

from __future__ import annotations

from aiohttp import web

from homeserver.appstate import RATE_LIMITERS, ROOM_READER, ROOM_SENDER
from homeserver.client.auth import get_requester, massaged_ts
from homeserver.client.delayed_events import schedule_if_delayed
from homeserver.client.validate import event_content
from homeserver.errors import invalid_param
from homeserver.http import json_response, query_param, read_json_body

from .room_services import (
    MAX_STATE_KEY,
    add_routes,
    event_type_param,
    room_id_param,
)


def _state_key(request: web.Request) -> str:
    key = request.match_info.get("state_key", "")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_STATE_KEY:
        raise invalid_param("Invalid state_key: longer than 255 bytes")
    if "\x00" in key or any(0xD800 <= ord(c) <= 0xDFFF for c in key):
        raise invalid_param("Invalid state_key: bad characters")
    return key


async def get_state(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = room_id_param(request)
    events = await request.config_dict[ROOM_READER].state(
        room_id, requester.user_id, requester.device_id
    )
    return json_response(events)


def _format(value: str) -> str:
    if value not in ("content", "event"):
        raise ValueError("must be 'content' or 'event'")
    return value


async def get_state_event(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = room_id_param(request)
    event_type = event_type_param(request)
    state_key = _state_key(request)
    fmt = query_param(request, "format", _format, default="content")
    event = await request.config_dict[ROOM_READER].state_event(
        room_id, requester.user_id, requester.device_id, event_type, state_key
    )
    return json_response(event if fmt == "event" else event["content"])


async def put_state_event(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = room_id_param(request)
    event_type = event_type_param(request)
    state_key = _state_key(request)
    content = event_content(await read_json_body(request))
    delayed = await schedule_if_delayed(request, requester, room_id, event_type, state_key, content)
    if delayed is not None:
        return delayed
    request.config_dict[RATE_LIMITERS].check("message", requester.user_id)
    event_id = await request.config_dict[ROOM_SENDER].set_state(
        room_id,
        requester.user_id,
        event_type,
        state_key,
        content,
        massaged_ts(request, requester),
    )
    return json_response({"event_id": event_id})


def setup_routes(app: web.Application) -> None:
    add_routes(app, "GET", "/rooms/{room_id}/state", get_state)
    for path in (
        "/rooms/{room_id}/state/{event_type}",
        "/rooms/{room_id}/state/{event_type}/{state_key:.*}",
    ):
        add_routes(app, "GET", path, get_state_event)
        add_routes(app, "PUT", path, put_state_event)
