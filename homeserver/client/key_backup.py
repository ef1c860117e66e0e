"""/room_keys/*: server-side key backup versions and keys; thin handlers over
KeyBackupService."""

from __future__ import annotations

from aiohttp import web

from homeserver.appstate import KEY_BACKUP, Mounts
from homeserver.client.auth import get_requester
from homeserver.client.routes import add_route
from homeserver.http import json_response, query_param, read_json_body


async def create_version(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    body = await read_json_body(request)
    service = request.config_dict[KEY_BACKUP]
    return json_response(await service.create_version(requester.user_id, body))


async def get_version(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    version = request.match_info.get("version")
    service = request.config_dict[KEY_BACKUP]
    return json_response(await service.get_version(requester.user_id, version))


async def put_version(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    body = await read_json_body(request)
    service = request.config_dict[KEY_BACKUP]
    version = request.match_info["version"]
    return json_response(await service.update_version(requester.user_id, version, body))


async def delete_version(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    service = request.config_dict[KEY_BACKUP]
    version = request.match_info["version"]
    return json_response(await service.delete_version(requester.user_id, version))


def _where(request: web.Request) -> tuple[str, str | None, str | None]:
    version = query_param(request, "version", required=True)
    return version, request.match_info.get("roomId"), request.match_info.get("sessionId")


async def put_keys(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    version, room_id, session_id = _where(request)
    body = await read_json_body(request)
    service = request.config_dict[KEY_BACKUP]
    return json_response(
        await service.put_keys(requester.user_id, version, body, room_id, session_id)
    )


async def get_keys(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    version, room_id, session_id = _where(request)
    service = request.config_dict[KEY_BACKUP]
    return json_response(await service.get_keys(requester.user_id, version, room_id, session_id))


async def delete_keys(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    version, room_id, session_id = _where(request)
    service = request.config_dict[KEY_BACKUP]
    return json_response(await service.delete_keys(requester.user_id, version, room_id, session_id))


def setup(mounts: Mounts) -> None:
    app = mounts.client
    prefixes = ("/v3", "/r0", "/unstable")
    add_route(app, "POST", "/room_keys/version", create_version, prefixes=prefixes)
    add_route(app, "GET", "/room_keys/version", get_version, prefixes=prefixes)
    add_route(app, "GET", "/room_keys/version/{version}", get_version, prefixes=prefixes)
    add_route(app, "PUT", "/room_keys/version/{version}", put_version, prefixes=prefixes)
    add_route(app, "DELETE", "/room_keys/version/{version}", delete_version, prefixes=prefixes)
    for path in (
        "/room_keys/keys",
        "/room_keys/keys/{roomId}",
        "/room_keys/keys/{roomId}/{sessionId}",
    ):
        add_route(app, "PUT", path, put_keys, prefixes=prefixes)
        add_route(app, "GET", path, get_keys, prefixes=prefixes)
        add_route(app, "DELETE", path, delete_keys, prefixes=prefixes)
