"""POST /createRoom: validate every field, then create, alias, publish and invite.

Validation happens before anything is written, so a bad request never leaves a
half-created room behind. Creation itself is `RoomCreator.create_room`; invites go
through the membership service (with `is_direct` on the invite content).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aiohttp import web

from homeserver.appstate import (
    CONFIG,
    MEMBERSHIP,
    RATE_LIMITERS,
    ROOM_CREATOR,
    ROOM_DIRECTORY,
    ROOM_READ_STORE,
    STORES,
)
from homeserver.client.auth import get_requester
from homeserver.client.membership import check_may_invite, invite_third_party
from homeserver.client.validate import event_content, optional_bool, optional_dict, optional_str
from homeserver.errors import MatrixError, bad_json, invalid_param
from homeserver.events import KNOWN_ROOM_VERSIONS
from homeserver.events.retention import RETENTION_TYPE, check_retention_event
from homeserver.http import json_response, read_json_body
from homeserver.ids import is_valid_user_id, validate_room_alias
from homeserver.rooms.creation import PRESETS, RoomSpec

from .room_services import add_routes

MAX_INVITES = 1000
MAX_INITIAL_STATE = 1000
PL_INT_KEYS = (
    "ban",
    "events_default",
    "invite",
    "kick",
    "redact",
    "state_default",
    "users_default",
)


def _check_level(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 2**53 - 1:
        raise bad_json(f"power_level_content_override: '{key}' must be an integer")


def _check_power_levels(pl: dict[str, Any]) -> None:
    for key in PL_INT_KEYS:
        if key in pl:
            _check_level(key, pl[key])
    for key in ("users", "events"):
        if key in pl:
            if not isinstance(pl[key], dict):
                raise bad_json(f"power_level_content_override: '{key}' must be an object")
            for sub, value in pl[key].items():
                _check_level(f"{key}.{sub}", value)
                if key == "users" and not is_valid_user_id(sub):
                    raise bad_json(f"power_level_content_override: bad user ID {sub[:100]}")
    notifications = pl.get("notifications")
    if notifications is not None:
        if not isinstance(notifications, dict):
            raise bad_json("power_level_content_override: 'notifications' must be an object")
        for sub, value in notifications.items():
            _check_level(f"notifications.{sub}", value)


def _initial_state(body: dict[str, Any]) -> list[dict[str, Any]]:
    value = body.get("initial_state")
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_INITIAL_STATE:
        raise bad_json("'initial_state' must be a list of state events")
    out = []
    for item in value:
        if not isinstance(item, dict):
            raise bad_json("'initial_state' items must be objects")
        etype = item.get("type")
        key = item.get("state_key", "")
        content = item.get("content")
        if not isinstance(etype, str) or not etype or len(etype) > 255:
            raise bad_json("'initial_state' items need a string 'type'")
        if not isinstance(key, str) or len(key) > 255:
            raise bad_json("'initial_state' state_key must be a string")
        if not isinstance(content, dict):
            raise bad_json("'initial_state' items need an object 'content'")
        if etype in ("m.room.create", "m.room.member", "m.room.power_levels"):
            raise invalid_param(f"'initial_state' may not contain {etype}")
        if etype == RETENTION_TYPE:
            check_retention_event(content, key)  # before the room exists, not halfway
        out.append({"type": etype, "state_key": key, "content": content})
    return out


def parse_create_room(body: dict[str, Any], server_name: str, default_version: str) -> RoomSpec:
    """A validated RoomSpec, or a 400 naming the first bad field."""
    visibility = optional_str(body, "visibility", default="private")
    if visibility not in ("public", "private"):
        raise invalid_param("'visibility' must be 'public' or 'private'")
    preset = optional_str(body, "preset")
    if preset is None:
        preset = "public_chat" if visibility == "public" else "private_chat"
    if preset not in PRESETS:
        raise invalid_param(f"'preset' must be one of {', '.join(sorted(PRESETS))}")
    alias = None
    alias_name = optional_str(body, "room_alias_name", max_len=255)
    if alias_name is not None:
        if not alias_name or ":" in alias_name or any(c.isspace() for c in alias_name):
            raise invalid_param("'room_alias_name' must be a non-empty localpart")
        alias = f"#{alias_name}:{server_name}"
        try:
            validate_room_alias(alias)
        except ValueError as exc:
            raise invalid_param(f"'room_alias_name': {exc}") from None
    invite = body.get("invite", [])
    if invite is None:
        invite = []
    if not isinstance(invite, list) or len(invite) > MAX_INVITES:
        raise bad_json("'invite' must be a list of user IDs")
    for user in invite:
        if not is_valid_user_id(user):
            raise invalid_param(f"'invite': invalid user ID {str(user)[:100]}")
    invite_3pid = body.get("invite_3pid")
    if invite_3pid is not None and (
        not isinstance(invite_3pid, list)
        or len(invite_3pid) > MAX_INVITES
        or not all(isinstance(i, dict) for i in invite_3pid)
    ):
        raise bad_json("'invite_3pid' must be a list of objects")
    version = optional_str(body, "room_version", max_len=64, default=default_version)
    if version not in KNOWN_ROOM_VERSIONS:
        raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", f"Unsupported room version {version}")
    creation_content = dict(optional_dict(body, "creation_content") or {})
    if "type" in creation_content and not isinstance(creation_content["type"], str):
        raise bad_json("'creation_content.type' must be a string")
    pl_override = optional_dict(body, "power_level_content_override")
    if pl_override is not None:
        _check_power_levels(pl_override)
    return RoomSpec(
        room_version=version,  # type: ignore[arg-type]
        preset=preset,
        visibility=visibility,  # type: ignore[arg-type]
        name=optional_str(body, "name", max_len=255),
        topic=optional_str(body, "topic", max_len=4096),
        alias=alias,
        invite=list(dict.fromkeys(invite)),
        is_direct=optional_bool(body, "is_direct"),
        creation_content=creation_content,
        initial_state=_initial_state(body),
        power_level_content_override=pl_override,
    )


ENCRYPTION = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}


def encrypted_by_default(spec: RoomSpec, setting: str) -> RoomSpec:
    """encryption_enabled_by_default_for_room_type: all rooms, or those of the private
    presets ("invite"), start encrypted unless the request set the event itself."""
    wanted = setting == "all" or (
        setting == "invite" and spec.preset in ("private_chat", "trusted_private_chat")
    )
    named = any(e.get("type") == "m.room.encryption" for e in spec.initial_state)
    if not wanted or named:
        return spec
    return replace(spec, initial_state=[*spec.initial_state, dict(ENCRYPTION)])


async def create_room(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    # Every part of the body ends up in some event: hold it all to canonical JSON.
    body = event_content(await read_json_body(request, allow_empty=True), "createRoom body")
    app = request.config_dict
    config = app[CONFIG]
    spec = parse_create_room(body, config.server_name, config.default_room_version)
    app[RATE_LIMITERS].check("room_creation", requester.user_id)  # rc_room_creation
    spec = encrypted_by_default(spec, config.encryption_by_default)
    preset_levels = config.default_power_levels.get(spec.preset)
    if preset_levels:
        merged = {**preset_levels, **(spec.power_level_content_override or {})}
        spec = replace(spec, power_level_content_override=merged)
    if spec.invite and config.block_non_admin_invites:
        await check_may_invite(request, requester.user_id)
    stores = app[STORES]
    if spec.alias is not None and await stores.rooms.get_alias(spec.alias) is not None:
        raise MatrixError(400, "M_ROOM_IN_USE", "Room alias already taken")
    directory = app[ROOM_DIRECTORY]
    if spec.alias is not None:  # alias_creation_rules, before the room exists (no ID yet)
        directory.check_alias_allowed(spec.alias, "", requester.user_id)
    membership = app[MEMBERSHIP]
    member_content = await membership.profile_content(requester.user_id)
    room_id = await app[ROOM_CREATOR].create_room(requester.user_id, spec, member_content)
    if spec.alias is not None:
        await stores.rooms.create_alias(
            spec.alias, room_id, [config.server_name], creator=requester.user_id
        )
    # room_list_publication_rules: a room they deny is still created, not published
    # (as Synapse).
    if spec.visibility == "public" and await directory.may_publish(room_id, requester.user_id):
        await stores.rooms.set_room_is_public(room_id, True)
    extra: dict[str, Any] = {"is_direct": True} if spec.is_direct else {}
    for user in spec.invite:
        if user == requester.user_id:
            continue
        try:
            await membership.invite(room_id, requester.user_id, user, dict(extra))
        except MatrixError as exc:
            if exc.errcode != "M_INVITE_BLOCKED":
                raise
            continue  # v1.18: the room is created; that one invitee is not invited
        await app[ROOM_READ_STORE].unforget_room(user, room_id)
    for third_party in body.get("invite_3pid") or []:
        await invite_third_party(request, room_id, requester.user_id, third_party)
    return json_response({"room_id": room_id})


def setup_routes(app: web.Application) -> None:
    add_routes(app, "POST", "/createRoom", create_room)
