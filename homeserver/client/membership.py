"""Membership endpoints: join, leave, forget, invite, kick, ban, unban, knock, upgrade,
/joined_rooms, /members and /joined_members."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.accounts.identity import id_server_param
from homeserver.appstate import (
    CONFIG,
    MEMBERSHIP,
    RATE_LIMITERS,
    ROOM_DIRECTORY,
    ROOM_READ_STORE,
    ROOM_READER,
    ROOM_UPGRADER,
    STORES,
    THIRD_PARTY_INVITES,
)
from homeserver.client.auth import Requester, get_requester
from homeserver.client.validate import optional_str, require_str, require_str_list
from homeserver.errors import MatrixError, invalid_param
from homeserver.http import json_response, query_param, read_json_body
from homeserver.ids import is_valid_user_id
from homeserver.ratelimit import check_invite

from .room_services import (
    add_routes,
    room_id_or_alias_param,
    room_id_param,
    room_token,
    server_names_param,
)

MAX_REASON = 4096
MEMBERSHIPS = ("join", "invite", "leave", "ban", "knock")


def _reason(body: dict[str, Any]) -> str | None:
    return optional_str(body, "reason", max_len=MAX_REASON)


def _target(body: dict[str, Any]) -> str:
    user_id = require_str(body, "user_id", max_len=255)
    if not is_valid_user_id(user_id):
        raise invalid_param(f"Invalid user_id: {user_id[:100]}")
    return user_id


async def _resolve(request: web.Request, target: str) -> tuple[str, list[str]]:
    servers = server_names_param(request)
    if target.startswith("#"):
        room_id, alias_servers = await request.config_dict[ROOM_DIRECTORY].resolve_alias(target)
        return room_id, [*servers, *(s for s in alias_servers if s not in servers)]
    return target, servers


async def join_by_id_or_alias(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    target = room_id_or_alias_param(request)
    body = await read_json_body(request, allow_empty=True)
    reason = _reason(body)
    room_id, servers = await _resolve(request, target)
    await _redeem_signed(request, requester, room_id, body)
    return await _join(request, requester, room_id, servers, reason)


async def join_room(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = room_id_param(request)
    body = await read_json_body(request, allow_empty=True)
    await _redeem_signed(request, requester, room_id, body)
    return await _join(request, requester, room_id, [], _reason(body))


async def _redeem_signed(
    request: web.Request, requester: Requester, room_id: str, body: dict[str, Any]
) -> None:
    """`third_party_signed` (a 3PID invite's signed block, from the identity server):
    first turn it into an invite of the joining user, then join as invited."""
    signed = body.get("third_party_signed")
    if signed is None:
        return
    if not isinstance(signed, dict) or not isinstance(signed.get("sender"), str):
        raise MatrixError(400, "M_BAD_JSON", "third_party_signed must name its sender")
    if signed.get("mxid") != requester.user_id:
        raise MatrixError(403, "M_FORBIDDEN", "third_party_signed is for another user")
    current = await request.config_dict[STORES].current_state.get_membership(
        room_id, requester.user_id
    )
    if current not in ("invite", "join"):
        await request.config_dict[THIRD_PARTY_INVITES].exchange(
            room_id, signed["sender"], requester.user_id, signed
        )


async def _join(
    request: web.Request,
    requester: Requester,
    room_id: str,
    servers: list[str],
    reason: str | None,
) -> web.Response:
    user_id = requester.user_id
    event = await request.config_dict[MEMBERSHIP].join(
        room_id, user_id, servers, reason, guest=requester.is_guest
    )
    await request.config_dict[ROOM_READ_STORE].unforget_room(user_id, event.room_id)
    return json_response({"room_id": event.room_id})


async def knock(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    target = room_id_or_alias_param(request)
    body = await read_json_body(request, allow_empty=True)
    reason = _reason(body)
    room_id, servers = await _resolve(request, target)
    event = await request.config_dict[MEMBERSHIP].knock(room_id, requester.user_id, servers, reason)
    return json_response({"room_id": event.room_id})


async def leave(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = room_id_param(request)
    body = await read_json_body(request, allow_empty=True)
    reason = _reason(body)
    stores = request.config_dict[STORES]
    current = await stores.current_state.get_membership(room_id, requester.user_id)
    if current == "leave":
        return json_response({})  # already left: nothing to do
    await request.config_dict[MEMBERSHIP].set_membership(
        room_id, requester.user_id, requester.user_id, "leave", reason
    )
    if request.config_dict[CONFIG].forget_rooms_on_leave:  # (rooms.forget_on_leave)
        await request.config_dict[ROOM_READ_STORE].forget_room(requester.user_id, room_id)
    return json_response({})


async def forget(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = room_id_param(request)
    await read_json_body(request, allow_empty=True)
    stores = request.config_dict[STORES]
    current = await stores.current_state.get_membership(room_id, requester.user_id)
    if current in ("join", "invite", "knock"):
        raise MatrixError(400, "M_UNKNOWN", "You must leave the room before forgetting it")
    if current is None:
        raise MatrixError(404, "M_NOT_FOUND", "You have never been in this room")
    await request.config_dict[ROOM_READ_STORE].forget_room(requester.user_id, room_id)
    return json_response({})


async def check_may_invite(request: web.Request, user_id: str) -> None:
    """block_non_admin_invites: only server admins send invites (Synapse's key)."""
    if request.config_dict[CONFIG].block_non_admin_invites:
        user = await request.config_dict[STORES].accounts.get_user(user_id)
        if user is None or not user.is_admin:
            raise MatrixError(403, "M_FORBIDDEN", "Invites have been disabled on this server")


async def invite(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = room_id_param(request)
    body = await read_json_body(request)
    third_party = "user_id" not in body and "medium" in body
    if not third_party:
        target = _target(body)
    reason = _reason(body)
    content: dict[str, Any] = {} if reason is None else {"reason": reason}
    stores = request.config_dict[STORES]
    if await stores.current_state.get_membership(room_id, requester.user_id) != "join":
        if await stores.rooms.get_room_version(room_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        raise MatrixError(403, "M_FORBIDDEN", f"{requester.user_id} is not in the room")
    if third_party:
        await invite_third_party(request, room_id, requester.user_id, body)
        return json_response({})
    await check_may_invite(request, requester.user_id)
    check_invite(request.config_dict[RATE_LIMITERS], room_id, target, requester.user_id)
    await request.config_dict[MEMBERSHIP].invite(room_id, requester.user_id, target, content)
    await request.config_dict[ROOM_READ_STORE].unforget_room(target, room_id)
    return json_response({})


async def invite_third_party(
    request: web.Request, room_id: str, sender: str, body: dict[str, Any]
) -> None:
    """A 3PID invite (`id_server`, `id_access_token`, `medium`, `address`): rate
    limited before the identity server is asked anything."""
    id_server = id_server_param(require_str(body, "id_server", max_len=255))
    token = require_str(body, "id_access_token", max_len=1024)
    medium = require_str(body, "medium", max_len=32)
    address = require_str(body, "address", max_len=512)
    request.config_dict[RATE_LIMITERS].check("third_party_invite", sender)
    await request.config_dict[THIRD_PARTY_INVITES].invite(
        room_id,
        sender,
        id_server=id_server,
        id_access_token=token,
        medium=medium,
        address=address,
    )


def _moderation(membership: str, require_banned: bool = False, kick: bool = False) -> Any:
    async def handler(request: web.Request) -> web.Response:
        requester = await get_requester(request)
        room_id = room_id_param(request)
        body = await read_json_body(request)
        target = _target(body)
        reason = _reason(body)
        stores = request.config_dict[STORES]
        if require_banned:
            current = await stores.current_state.get_membership(room_id, target)
            if current != "ban" and await stores.rooms.get_room_version(room_id) is not None:
                raise MatrixError(403, "M_FORBIDDEN", f"{target} is not banned")
        if kick and await stores.rooms.get_room_version(room_id) is not None:
            # Only someone in the room (joined, invited or knocking) can be kicked,
            # as Synapse: kicking a banned, departed or unknown user is 403.
            current = await stores.current_state.get_membership(room_id, target)
            if current in (None, "leave", "ban"):
                raise MatrixError(403, "M_FORBIDDEN", "The target user is not in the room")
        await request.config_dict[MEMBERSHIP].set_membership(
            room_id, requester.user_id, target, membership, reason
        )
        return json_response({})

    return handler


async def joined_rooms(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    rooms = await request.config_dict[STORES].current_state.get_rooms_for_user(requester.user_id)
    return json_response({"joined_rooms": rooms})


def _membership_query(request: web.Request, name: str) -> str | None:
    def check(value: str) -> str:
        if value not in MEMBERSHIPS:
            raise ValueError(f"must be one of {', '.join(MEMBERSHIPS)}")
        return value

    return query_param(request, name, check)


async def members(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = room_id_param(request)
    at = query_param(request, "at", room_token)
    chunk = await request.config_dict[ROOM_READER].members(
        room_id,
        requester.user_id,
        requester.device_id,
        at=at,
        membership=_membership_query(request, "membership"),
        not_membership=_membership_query(request, "not_membership"),
    )
    return json_response({"chunk": chunk})


async def joined_members(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = room_id_param(request)
    joined = await request.config_dict[ROOM_READER].joined_members(room_id, requester.user_id)
    return json_response({"joined": joined})


async def upgrade(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = room_id_param(request)
    body = await read_json_body(request)
    new_version = require_str(body, "new_version", max_len=64)
    additional = None
    if body.get("additional_creators") is not None:
        additional = require_str_list(body, "additional_creators", max_items=100, max_len=255)
        for user_id in additional:
            if not is_valid_user_id(user_id):
                raise invalid_param(f"Invalid user ID in additional_creators: {user_id!r}")
    member_content = await request.config_dict[MEMBERSHIP].profile_content(requester.user_id)
    new_room = await request.config_dict[ROOM_UPGRADER].upgrade(
        room_id, requester.user_id, new_version, member_content, additional
    )
    return json_response({"replacement_room": new_room})


def setup_routes(app: web.Application) -> None:
    add_routes(app, "POST", "/join/{room_id_or_alias}", join_by_id_or_alias)
    add_routes(app, "POST", "/knock/{room_id_or_alias}", knock)
    add_routes(app, "POST", "/rooms/{room_id}/join", join_room)
    add_routes(app, "POST", "/rooms/{room_id}/leave", leave)
    add_routes(app, "POST", "/rooms/{room_id}/forget", forget)
    add_routes(app, "POST", "/rooms/{room_id}/invite", invite)
    add_routes(app, "POST", "/rooms/{room_id}/kick", _moderation("leave", kick=True))
    add_routes(app, "POST", "/rooms/{room_id}/ban", _moderation("ban"))
    add_routes(app, "POST", "/rooms/{room_id}/unban", _moderation("leave", require_banned=True))
    add_routes(app, "POST", "/rooms/{room_id}/upgrade", upgrade)
    add_routes(app, "GET", "/joined_rooms", joined_rooms)
    add_routes(app, "GET", "/rooms/{room_id}/members", members)
    add_routes(app, "GET", "/rooms/{room_id}/joined_members", joined_members)
