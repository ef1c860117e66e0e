"""GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]] and
GET /rooms/{roomId}/threads (client-server API v1)."""

from __future__ import annotations

from aiohttp import web

from homeserver.appstate import RELATIONS, Mounts
from homeserver.client.auth import get_requester
from homeserver.client.room_services import room_token_text
from homeserver.http import json_response, path_param, query_param
from homeserver.ids import validate_room_id
from homeserver.relations.service import DEFAULT_LIMIT

MAX_ID = 1024


def _event_id(value: str) -> str:
    if not value.startswith("$") or len(value) > MAX_ID:
        raise ValueError("not an event ID")
    return value


def _room_id(value: str) -> str:
    validate_room_id(value)
    return value


def _short(value: str) -> str:
    if not value or len(value) > MAX_ID:
        raise ValueError("bad length")
    return value


def _limit(value: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise ValueError("must be a non-negative integer")
    return int(value)


def _dir(value: str) -> str:
    if value not in ("b", "f"):
        raise ValueError("must be 'b' or 'f'")
    return value


def _bool(value: str) -> bool:
    if value not in ("true", "false"):
        raise ValueError("must be 'true' or 'false'")
    return value == "true"


async def get_relations(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = path_param(request, "room_id", _room_id)
    event_id = path_param(request, "event_id", _event_id)
    rel_type = path_param(request, "rel_type", _short) if "rel_type" in request.match_info else None
    event_type = (
        path_param(request, "event_type", _short) if "event_type" in request.match_info else None
    )
    body = await request.config_dict[RELATIONS].relations(
        requester.user_id,
        room_id,
        event_id,
        rel_type=rel_type,
        event_type=event_type,
        from_token=query_param(request, "from", room_token_text),
        to_token=query_param(request, "to", room_token_text),
        limit=query_param(request, "limit", _limit, default=DEFAULT_LIMIT),
        direction=query_param(request, "dir", _dir, default="b"),
        recurse=query_param(request, "recurse", _bool),
    )
    return json_response(body)


async def get_threads(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = path_param(request, "room_id", _room_id)
    body = await request.config_dict[RELATIONS].threads(
        requester.user_id,
        room_id,
        include=query_param(request, "include", default="all"),
        from_token=query_param(request, "from", room_token_text),
        limit=query_param(request, "limit", _limit, default=DEFAULT_LIMIT),
    )
    return json_response(body)


def setup(mounts: Mounts) -> None:
    router = mounts.client.router
    for prefix in ("/v1", "/unstable"):
        base = f"{prefix}/rooms/{{room_id}}/relations/{{event_id}}"
        router.add_get(base, get_relations)
        router.add_get(f"{base}/{{rel_type}}", get_relations)
        router.add_get(f"{base}/{{rel_type}}/{{event_type}}", get_relations)
    router.add_get("/v1/rooms/{room_id}/threads", get_threads)
