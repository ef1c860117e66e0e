"""Shared pieces of the rooms client area: routing and path parameters."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.errors import invalid_param
from homeserver.http import Handler, path_param
from homeserver.ids import (
    is_valid_server_name,
    validate_event_id,
    validate_room_alias,
    validate_room_id,
)
from homeserver.rooms.pagination import RoomToken
from homeserver.sync.tokens import StreamToken

CLIENT_VERSIONS = ("v3", "r0")
MAX_EVENT_TYPE = 255
MAX_STATE_KEY = 255
MAX_TXN_ID = 255


def room_token(text: str) -> RoomToken:
    """A pagination token from a client: ours (`t<n>`), or a sync token (`s...`), whose
    events position names the same point in the stream."""
    if text.startswith("s"):
        return RoomToken(StreamToken.decode(text).events)
    return RoomToken.parse(text)


def room_token_text(text: str) -> str:
    """`room_token`, encoded again (for services that take the token text)."""
    return room_token(text).encode()


def add_routes(
    app: web.Application,
    method: str,
    path: str,
    handler: Handler,
    versions: tuple[str, ...] = CLIENT_VERSIONS,
) -> None:
    """Register `handler` at `/<version><path>` for each version prefix."""
    for version in versions:
        app.router.add_route(method, f"/{version}{path}", handler)


def room_id_param(request: web.Request, name: str = "room_id") -> str:
    return path_param(request, name, validate_room_id)  # type: ignore[return-value]


def event_id_param(request: web.Request, name: str = "event_id") -> str:
    return path_param(request, name, validate_event_id)  # type: ignore[return-value]


def alias_param(request: web.Request, name: str = "room_alias") -> str:
    return path_param(request, name, validate_room_alias)  # type: ignore[return-value]


def _event_type(value: str) -> str:
    if not value or len(value.encode("utf-8", "surrogatepass")) > MAX_EVENT_TYPE:
        raise ValueError("event type must be 1 to 255 bytes")
    return value


def event_type_param(request: web.Request, name: str = "event_type") -> str:
    return path_param(request, name, _event_type)  # type: ignore[return-value]


def _txn_id(value: str) -> str:
    if not value or len(value) > MAX_TXN_ID:
        raise ValueError("transaction ID must be 1 to 255 characters")
    return value


def txn_id_param(request: web.Request, name: str = "txn_id") -> str:
    return path_param(request, name, _txn_id)  # type: ignore[return-value]


def room_id_or_alias_param(request: web.Request, name: str = "room_id_or_alias") -> str:
    value: Any = path_param(request, name)
    if value.startswith("!"):
        return room_id_param(request, name)
    if value.startswith("#"):
        return alias_param(request, name)
    raise invalid_param(f"Invalid {name}: must be a room ID or a room alias")


def server_names_param(request: web.Request) -> list[str]:
    """`via` (current) and `server_name` (deprecated) query parameters, validated."""
    names = [*request.query.getall("via", []), *request.query.getall("server_name", [])]
    for name in names:
        if not is_valid_server_name(name):
            raise invalid_param(f"Invalid server name: {name[:100]}")
    return list(dict.fromkeys(names))
