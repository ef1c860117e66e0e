"""/_synapse/admin endpoints about the server itself: its version and its federation
destinations."""

from __future__ import annotations

from aiohttp import web

from homeserver import __version__
from homeserver.appstate import ADMIN_DESTINATIONS
from homeserver.http import json_response, path_param
from homeserver.ids import is_valid_server_name
from homeserver.storage.destinations import DESTINATION_ORDER_COLUMNS

from .common import choice_param, direction_param, page_params, require_admin, str_param


async def server_version(request: web.Request) -> web.Response:
    """Unauthenticated, as in Synapse (admin UIs ask before logging in)."""
    return json_response({"server_version": __version__})


def _destination(request: web.Request) -> str:
    def check(value: str) -> str:
        if not is_valid_server_name(value):
            raise ValueError("not a server name")
        return value

    return str(path_param(request, "destination", check))


async def list_destinations(request: web.Request) -> web.Response:
    await require_admin(request)
    order_by = (
        choice_param(request, "order_by", DESTINATION_ORDER_COLUMNS, "destination") or "destination"
    )
    body = await request.config_dict[ADMIN_DESTINATIONS].list(
        page_params(request),
        str_param(request, "destination", 255),
        order_by,
        direction_param(request) == "b",
    )
    return json_response(body)


async def get_destination(request: web.Request) -> web.Response:
    await require_admin(request)
    return json_response(await request.config_dict[ADMIN_DESTINATIONS].get(_destination(request)))


async def destination_rooms(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await request.config_dict[ADMIN_DESTINATIONS].rooms(
        _destination(request), page_params(request), direction_param(request) == "b"
    )
    return json_response(body)


async def reset_connection(request: web.Request) -> web.Response:
    await require_admin(request)
    await request.config_dict[ADMIN_DESTINATIONS].reset_connection(_destination(request))
    return json_response({})


def add_routes(admin: web.Application) -> None:
    r = admin.router
    r.add_get("/v1/server_version", server_version)
    r.add_get("/v1/federation/destinations", list_destinations)
    r.add_get("/v1/federation/destinations/{destination}", get_destination)
    r.add_get("/v1/federation/destinations/{destination}/rooms", destination_rooms)
    r.add_post("/v1/federation/destinations/{destination}/reset_connection", reset_connection)
