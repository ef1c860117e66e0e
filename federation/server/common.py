"""Shared pieces of the inbound handlers: the room gate every room endpoint passes.

`room_gate` combines what the spec asks of a request touching a room: the room exists
here, the origin is not denied by the room's server ACL, and (for reads of room data)
the origin has a user joined to the room or the room is world-readable.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from federation.acl import check_server_acl
from federation.server.auth_middleware import origin_of
from homeserver.appstate import STORES
from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.events import RoomVersion, get_room_version
from homeserver.http import path_param
from homeserver.ids import validate_room_id
from homeserver.storage import Stores

from .visibility import server_can_read_room


def stores_of(request: web.Request) -> Stores:
    return request.config_dict[STORES]


def room_id_param(request: web.Request, name: str = "room_id") -> str:
    value = path_param(request, name)
    try:
        validate_room_id(value)
    except ValueError as e:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid room ID: {e}") from None
    return value


async def room_version_or_404(stores: Stores, room_id: str) -> RoomVersion:
    version = await stores.rooms.get_room_version(room_id)
    if version is None:
        raise not_found("Unknown room")
    try:
        return get_room_version(version)
    except KeyError:
        raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", "Unsupported room version") from None


async def room_gate(request: web.Request, room_id: str, *, must_see: bool = True) -> RoomVersion:
    """Check the room exists, the ACL allows the origin and, with `must_see`, that the
    origin may read the room; return the room version."""
    stores = stores_of(request)
    version = await room_version_or_404(stores, room_id)
    origin = origin_of(request)
    await check_server_acl(stores, room_id, origin)
    if must_see and not await server_can_read_room(stores, room_id, origin):
        raise forbidden("Your server has no user in this room")
    return version


def int_query(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be an integer") from None
    return max(lo, min(hi, value))


def require_dict(body: Any, what: str = "Body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise MatrixError(400, "M_BAD_JSON", f"{what} must be a JSON object")
    return body
