"""Room aliases (/directory/room), /rooms/{id}/aliases, directory visibility
(/directory/list/room), /publicRooms (GET and POST) and /room_summary."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.appstate import (
    APP_SERVICE_SENDER,
    APP_SERVICES,
    CONFIG,
    ROOM_DIRECTORY,
    SPACE_HIERARCHY,
    STORES,
)
from homeserver.client.auth import get_optional_requester, get_requester
from homeserver.client.validate import optional_dict, optional_int, optional_str, require_str
from homeserver.errors import MatrixError, bad_json, forbidden, invalid_param
from homeserver.http import json_response, query_param, read_json_body
from homeserver.ids import is_valid_server_name, validate_room_id
from homeserver.rooms.visibility import is_world_readable

from .room_services import (
    add_routes,
    alias_param,
    room_id_or_alias_param,
    room_id_param,
)

MAX_PUBLIC_LIMIT = 1000


async def get_alias(request: web.Request) -> web.Response:
    alias = alias_param(request)
    directory = request.config_dict[ROOM_DIRECTORY]
    try:
        room_id, servers = await directory.resolve_alias(alias)
    except MatrixError as e:
        # An alias of an appservice's namespace may be made on demand: ask, then look again.
        sender = request.config_dict.get(APP_SERVICE_SENDER)
        if e.status != 404 or sender is None or not await sender.query_alias(alias):
            raise
        room_id, servers = await directory.resolve_alias(alias)
    return json_response({"room_id": room_id, "servers": servers})


async def put_alias(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    alias = alias_param(request)
    services = request.config_dict.get(APP_SERVICES)
    owner = services.exclusive_owner_of_alias(alias) if services else None
    if owner is not None and requester.app_service_id != owner.id:
        raise MatrixError(400, "M_EXCLUSIVE", "This alias is reserved by an application service")
    body = await read_json_body(request)
    room_id = require_str(body, "room_id", max_len=255)
    try:
        validate_room_id(room_id)
    except ValueError as exc:
        raise invalid_param(f"Invalid room_id: {exc}") from None
    await request.config_dict[ROOM_DIRECTORY].create_alias(alias, room_id, requester.user_id)
    return json_response({})


async def delete_alias(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    alias = alias_param(request)
    await request.config_dict[ROOM_DIRECTORY].delete_alias(alias, requester.user_id)
    return json_response({})


async def room_aliases(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = room_id_param(request)
    stores = request.config_dict[STORES]
    if await stores.rooms.get_room_version(room_id) is None:
        raise forbidden(f"User {requester.user_id} not in room {room_id}")
    aliases = await request.config_dict[ROOM_DIRECTORY].aliases_for_room(
        room_id, requester.user_id, await is_world_readable(stores, room_id)
    )
    return json_response({"aliases": aliases})


async def get_visibility(request: web.Request) -> web.Response:
    room_id = room_id_param(request)
    visibility = await request.config_dict[ROOM_DIRECTORY].get_visibility(room_id)
    return json_response({"visibility": visibility})


async def put_visibility(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = room_id_param(request)
    body = await read_json_body(request, allow_empty=True)
    visibility = optional_str(body, "visibility", default="public")
    if visibility not in ("public", "private"):
        raise invalid_param("'visibility' must be 'public' or 'private'")
    await request.config_dict[ROOM_DIRECTORY].set_visibility(
        room_id,
        requester.user_id,
        visibility,  # type: ignore[arg-type]
    )
    return json_response({})


def _limit(value: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise ValueError("must be a non-negative integer")
    return min(int(value), MAX_PUBLIC_LIMIT)


def _remote_server(request: web.Request) -> str | None:
    """The `server` query parameter when it names another server (None for ours)."""
    server = query_param(request, "server")
    if server is None or server == request.config_dict[CONFIG].server_name:
        return None
    if len(server) > 255 or not is_valid_server_name(server):
        raise invalid_param("'server' is not a valid server name")
    return server


async def public_rooms_get(request: web.Request) -> web.Response:
    remote = _remote_server(request)
    if remote is None and request.config_dict[CONFIG].allow_public_rooms_without_auth:
        await get_optional_requester(request)
    else:
        # As Synapse: our directory needs a token unless allow_public_rooms_without_auth,
        # and only a user of ours may make us ask another server.
        await get_requester(request)
    limit = query_param(request, "limit", _limit)
    since = query_param(request, "since")
    if since is not None and len(since) > 1000:
        raise invalid_param("'since' is too long")
    directory = request.config_dict[ROOM_DIRECTORY]
    if remote is not None:
        body = await directory.remote_public_rooms(
            remote, limit=limit, since=since, search_term=None
        )
    else:
        body = await directory.public_rooms(limit=limit, since=since, search_term=None)
    return json_response(body)


async def put_appservice_visibility(request: web.Request) -> web.Response:
    """Only an appservice (its as_token) may publish to its networks' room lists."""
    requester = await get_requester(request)
    if requester.app_service_id is None:
        raise forbidden("Only application services may use this endpoint")
    network_id = request.match_info["network_id"]
    if not network_id or len(network_id) > 255 or "|" in network_id:
        raise invalid_param("Invalid network ID")
    body = await read_json_body(request)
    visibility = body.get("visibility")
    if visibility not in ("public", "private"):
        raise bad_json("'visibility' must be 'public' or 'private'")
    await request.config_dict[ROOM_DIRECTORY].set_appservice_visibility(
        requester.app_service_id, network_id, room_id_param(request), visibility
    )
    return json_response({})


async def public_rooms_post(request: web.Request) -> web.Response:
    await get_requester(request)
    remote = _remote_server(request)
    body = await read_json_body(request, allow_empty=True)
    limit = optional_int(body, "limit")
    if limit is not None:
        if limit < 0:
            raise invalid_param("'limit' must not be negative")
        limit = min(limit, MAX_PUBLIC_LIMIT)
    since = optional_str(body, "since", max_len=1000 if remote else 64)
    instance = optional_str(body, "third_party_instance_id", max_len=255)
    all_networks = body.get("include_all_networks")
    if all_networks is not None and not isinstance(all_networks, bool):
        raise bad_json("'include_all_networks' must be a boolean")
    filt = optional_dict(body, "filter") or {}
    term = optional_str(filt, "generic_search_term", max_len=1000)
    room_types: Any = filt.get("room_types")
    if room_types is not None and (
        not isinstance(room_types, list)
        or not all(t is None or isinstance(t, str) for t in room_types)
    ):
        raise bad_json("'filter.room_types' must be a list of strings or nulls")
    directory = request.config_dict[ROOM_DIRECTORY]
    if remote is not None:
        result = await directory.remote_public_rooms(
            remote,
            limit=limit,
            since=since,
            search_term=term,
            room_types=room_types,
            include_all_networks=all_networks is True,
            third_party_instance_id=instance,
        )
    else:
        result = await directory.public_rooms(
            limit=limit,
            since=since,
            search_term=term,
            room_types=room_types,
            include_all_networks=all_networks is True,
            third_party_instance_id=instance,
        )
    return json_response(result)


async def room_summary(request: web.Request) -> web.Response:
    requester = await get_optional_requester(request)
    target = room_id_or_alias_param(request)
    directory = request.config_dict[ROOM_DIRECTORY]
    room_id = target
    if target.startswith("#"):
        room_id, _ = await directory.resolve_alias(target)
    user_id = requester.user_id if requester is not None else None
    return json_response(await directory.summary_for(room_id, user_id))


def _bool_query(value: str) -> bool:
    if value not in ("true", "false"):
        raise ValueError("must be 'true' or 'false'")
    return value == "true"


def _non_negative(value: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise ValueError("must be a non-negative integer")
    return int(value)


async def hierarchy(request: web.Request) -> web.Response:
    """GET /rooms/{roomId}/hierarchy (homeserver.rooms.hierarchy)."""
    requester = await get_requester(request)
    room_id = room_id_param(request)
    limit = query_param(request, "limit", _non_negative)
    if limit == 0:
        raise invalid_param("'limit' must be positive")
    body = await request.config_dict[SPACE_HIERARCHY].hierarchy(
        room_id,
        requester.user_id,
        suggested_only=query_param(request, "suggested_only", _bool_query, default=False),
        max_depth=query_param(request, "max_depth", _non_negative),
        limit=limit,
        from_token=query_param(request, "from"),
    )
    return json_response(body)


def setup_routes(app: web.Application) -> None:
    add_routes(
        app,
        "GET",
        "/rooms/{room_id}/hierarchy",
        hierarchy,
        versions=("v1", "unstable/org.matrix.msc2946"),
    )
    add_routes(app, "GET", "/directory/room/{room_alias}", get_alias)
    add_routes(app, "PUT", "/directory/room/{room_alias}", put_alias)
    add_routes(app, "DELETE", "/directory/room/{room_alias}", delete_alias)
    add_routes(app, "GET", "/rooms/{room_id}/aliases", room_aliases)
    add_routes(app, "GET", "/directory/list/room/{room_id}", get_visibility)
    add_routes(app, "PUT", "/directory/list/room/{room_id}", put_visibility)
    add_routes(
        app,
        "PUT",
        "/directory/list/appservice/{network_id}/{room_id}",
        put_appservice_visibility,
    )
    add_routes(app, "GET", "/publicRooms", public_rooms_get)
    add_routes(app, "POST", "/publicRooms", public_rooms_post)
    add_routes(
        app,
        "GET",
        "/room_summary/{room_id_or_alias}",
        room_summary,
        versions=("v1", "unstable/im.nheko.summary"),
    )
    # MSC3266's unstable paths, as Synapse serves them: matrix-js-sdk's getRoomSummary
    # (Element's room previews) asks the first, then the second.
    for path in ("/summary/{room_id_or_alias}", "/rooms/{room_id_or_alias}/summary"):
        add_routes(app, "GET", path, room_summary, versions=("unstable/im.nheko.summary",))
