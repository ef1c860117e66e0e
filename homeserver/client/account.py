"""/account/whoami, /account/password, /account/deactivate, /account/3pid/bind, and
the accounts area's `setup` (the routes of register/login/devices/admin/3PIDs too).

Binding a 3PID at an identity server goes to the server the client names
(homeserver/accounts/identity_binds.py); the addresses we validate ourselves (by mail)
are homeserver/client/threepids.py.
"""

from __future__ import annotations

from aiohttp import web

import homeserver.client.admin as admin_api
import homeserver.client.devices as devices_api
import homeserver.client.login as login_api
import homeserver.client.register as register_api
import homeserver.client.sso as sso_api
import homeserver.client.threepids as threepids_api
from homeserver.accounts.identity import id_server_param
from homeserver.accounts.passwords import (
    password_policy_json,
)
from homeserver.accounts.uia import PASSWORD
from homeserver.appstate import ACCOUNT_LIFECYCLE, CONFIG, IDENTITY_BINDS, UIA, Mounts
from homeserver.client.auth import get_requester
from homeserver.client.routes import add_route, new_password_field
from homeserver.client.validate import optional_bool, optional_dict, optional_str, require_str
from homeserver.http import json_response, read_json_body


async def get_whoami(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    body = {"user_id": requester.user_id, "is_guest": requester.is_guest}
    if requester.device_id is not None:
        body["device_id"] = requester.device_id
    return json_response(body)


async def post_password(request: web.Request) -> web.Response:
    body = await read_json_body(request)
    if threepids_api.wants_email_reset(request):
        return await threepids_api.reset_password_by_email(request, body)
    requester = await get_requester(request)
    new_password = new_password_field(request, body)
    logout_devices = optional_bool(body, "logout_devices", default=True)
    uia = request.config_dict[UIA]
    result = await uia.authenticate(
        optional_dict(body, "auth"),
        [[PASSWORD]],
        uri="/account/password",
        method="POST",
        user_id=requester.user_id,
        token_id=requester.token_id,
    )
    await request.config_dict[ACCOUNT_LIFECYCLE].change_password(
        requester.user_id,
        new_password,
        logout_devices=logout_devices,
        keep_device=requester.device_id,
    )
    await uia.finish(result)
    return json_response({})


async def get_password_policy(request: web.Request) -> web.Response:
    return json_response(password_policy_json(request.config_dict[CONFIG].passwords.policy))


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
        token_id=requester.token_id,
    )
    lifecycle = request.config_dict[ACCOUNT_LIFECYCLE]
    unbind_result = await lifecycle.deactivate(requester.user_id, erase=erase)
    await uia.finish(result)
    return json_response({"id_server_unbind_result": unbind_result})


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


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/account/whoami", get_whoami)
    add_route(app, "POST", "/account/password", post_password)
    add_route(app, "GET", "/password_policy", get_password_policy)
    add_route(app, "POST", "/account/deactivate", post_deactivate)
    add_route(app, "POST", "/account/3pid/bind", post_threepid_bind)


def setup(mounts: Mounts) -> None:
    register_api.add_routes(mounts.client)
    mounts.root.router.add_get("/_matrix/consent", register_api.get_consent_policy)
    login_api.add_routes(mounts.client)
    add_routes(mounts.client)
    threepids_api.add_routes(mounts.client)
    sso_api.add_routes(mounts.client, mounts.root)
    devices_api.add_routes(mounts.client)
    admin_api.add_routes(mounts.client, mounts.admin)
