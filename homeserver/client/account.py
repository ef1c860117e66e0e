"""/account/whoami, /account/password, /account/deactivate, /account/3pid*, and the
accounts area's `setup` (the routes of register/login/devices/admin too).

3PIDs are held by identity servers, not by us: binding and unbinding go to the
identity server the client names (homeserver/accounts/identity_binds.py); we hold no
verified 3PIDs of our own, so GET /account/3pid lists none and adding one (which needs
email or SMS sending) answers 403 M_THREEPID_DENIED.
"""

from __future__ import annotations

from aiohttp import web

import homeserver.client.admin as admin_api
import homeserver.client.devices as devices_api
import homeserver.client.login as login_api
import homeserver.client.register as register_api
from homeserver.accounts.identity import id_server_param
from homeserver.accounts.passwords import MAX_PASSWORD_LENGTH
from homeserver.accounts.uia import PASSWORD
from homeserver.appstate import ACCOUNT_LIFECYCLE, IDENTITY_BINDS, UIA, Mounts
from homeserver.client.auth import get_requester
from homeserver.client.routes import add_route, threepid_denied
from homeserver.client.validate import optional_bool, optional_dict, optional_str, require_str
from homeserver.http import json_response, read_json_body


async def get_whoami(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    body = {"user_id": requester.user_id, "is_guest": requester.is_guest}
    if requester.device_id is not None:
        body["device_id"] = requester.device_id
    return json_response(body)


async def post_password(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    body = await read_json_body(request)
    new_password = require_str(body, "new_password", max_len=MAX_PASSWORD_LENGTH)
    logout_devices = optional_bool(body, "logout_devices", default=True)
    uia = request.config_dict[UIA]
    result = await uia.authenticate(
        optional_dict(body, "auth"),
        [[PASSWORD]],
        uri="/account/password",
        method="POST",
        user_id=requester.user_id,
    )
    await request.config_dict[ACCOUNT_LIFECYCLE].change_password(
        requester.user_id,
        new_password,
        logout_devices=logout_devices,
        keep_device=requester.device_id,
    )
    await uia.finish(result)
    return json_response({})


async def post_deactivate(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    body = await read_json_body(request, allow_empty=True)
    erase = optional_bool(body, "erase")
    optional_str(body, "id_server", max_len=255)  # every identity server we bound at
    uia = request.config_dict[UIA]
    result = await uia.authenticate(
        optional_dict(body, "auth"),
        [[PASSWORD]],
        uri="/account/deactivate",
        method="POST",
        user_id=requester.user_id,
    )
    lifecycle = request.config_dict[ACCOUNT_LIFECYCLE]
    unbind_result = await lifecycle.deactivate(requester.user_id, erase=erase)
    await uia.finish(result)
    return json_response({"id_server_unbind_result": unbind_result})


async def get_threepids(request: web.Request) -> web.Response:
    await get_requester(request)
    return json_response({"threepids": []})


async def post_threepid_bind(request: web.Request) -> web.Response:
    """POST /account/3pid/bind: the identity server binds the 3PID it validated."""
    requester = await get_requester(request)
    body = await read_json_body(request)
    id_server = id_server_param(require_str(body, "id_server", max_len=255))
    await request.config_dict[IDENTITY_BINDS].bind(
        requester.user_id,
        id_server,
        require_str(body, "id_access_token", max_len=1024),
        require_str(body, "sid", max_len=255),
        require_str(body, "client_secret", max_len=255),
    )
    return json_response({})


async def post_threepid_removed(request: web.Request) -> web.Response:
    """POST /account/3pid/delete and /unbind: the identity server(s) forget the
    binding ("no-support" when none could, or none is known)."""
    requester = await get_requester(request)
    body = await read_json_body(request)
    medium = require_str(body, "medium", max_len=32)
    address = require_str(body, "address", max_len=512)
    raw_server = optional_str(body, "id_server", max_len=255)
    id_server = None if raw_server is None else id_server_param(raw_server)
    done = await request.config_dict[IDENTITY_BINDS].unbind(
        requester.user_id, medium, address, id_server
    )
    return json_response({"id_server_unbind_result": "success" if done else "no-support"})


async def post_threepid_refused(request: web.Request) -> web.Response:
    await get_requester(request)
    return await threepid_denied(request)


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/account/whoami", get_whoami)
    add_route(app, "POST", "/account/password", post_password)
    add_route(app, "POST", "/account/deactivate", post_deactivate)
    add_route(app, "GET", "/account/3pid", get_threepids)
    add_route(app, "POST", "/account/3pid/add", post_threepid_refused)
    add_route(app, "POST", "/account/3pid/bind", post_threepid_bind)
    add_route(app, "POST", "/account/3pid", post_threepid_refused)  # deprecated add
    for action in ("delete", "unbind"):
        add_route(app, "POST", f"/account/3pid/{action}", post_threepid_removed)
    for path in ("/account/3pid", "/account/password"):
        for medium in ("email", "msisdn"):
            add_route(app, "POST", f"{path}/{medium}/requestToken", threepid_denied)


def setup(mounts: Mounts) -> None:
    register_api.add_routes(mounts.client)
    login_api.add_routes(mounts.client)
    add_routes(mounts.client)
    devices_api.add_routes(mounts.client)
    admin_api.add_routes(mounts.client, mounts.admin)
