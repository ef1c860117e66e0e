"""Admin endpoints of the accounts area: Synapse's shared-secret registration
(/_synapse/admin/v1/register) and the client API's GET /admin/whois/{userId}."""

from __future__ import annotations

from aiohttp import web

from homeserver.accounts.admin_register import admin_register_response
from homeserver.accounts.passwords import MAX_PASSWORD_LENGTH
from homeserver.appstate import (
    ACCOUNT_LIFECYCLE,
    LAST_SEEN,
    REGISTRATION,
    SHARED_SECRET_REGISTRATION,
)
from homeserver.client.auth import get_requester
from homeserver.client.routes import add_route
from homeserver.client.validate import optional_bool, optional_str, require_str
from homeserver.errors import bad_json
from homeserver.http import json_response, path_param, read_json_body
from homeserver.ids import validate_user_id

MAX_USERNAME_INPUT = 1024


async def get_register_nonce(request: web.Request) -> web.Response:
    return json_response({"nonce": request.config_dict[SHARED_SECRET_REGISTRATION].new_nonce()})


async def post_register(request: web.Request) -> web.Response:
    body = await read_json_body(request)
    nonce = require_str(body, "nonce", max_len=256)
    username = require_str(body, "username", max_len=MAX_USERNAME_INPUT)
    password = require_str(body, "password", max_len=MAX_PASSWORD_LENGTH)
    admin = optional_bool(body, "admin")
    user_type = optional_str(body, "user_type", max_len=255)
    mac = require_str(body, "mac", max_len=256)
    displayname = optional_str(body, "displayname", max_len=1024)
    if "\x00" in username or "\x00" in password:
        raise bad_json("Invalid username or password")
    request.config_dict[SHARED_SECRET_REGISTRATION].check(
        nonce, username, password, admin, user_type, mac
    )
    result = await request.config_dict[REGISTRATION].register(
        username=username,
        password=password,
        admin=admin,
        displayname=displayname,
    )
    return json_response(admin_register_response(result))


async def get_whois(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    user_id = path_param(request, "user_id", validate_user_id)
    await request.config_dict[LAST_SEEN].flush()
    whois = await request.config_dict[ACCOUNT_LIFECYCLE].whois(requester.user_id, user_id)
    return json_response(whois)


def add_routes(client: web.Application, admin: web.Application) -> None:
    admin.router.add_get("/v1/register", get_register_nonce)
    admin.router.add_post("/v1/register", post_register)
    add_route(client, "GET", "/admin/whois/{user_id}", get_whois)
