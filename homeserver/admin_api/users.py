"""/_synapse/admin user endpoints: list, query, create/modify, deactivate, passwords,
sessions, devices, rooms, pushers, moderation flags, rate limits, login as a user, who
holds an email address."""

from __future__ import annotations

from aiohttp import web

from homeserver.accounts.passwords import MAX_PASSWORD_LENGTH
from homeserver.admin.users import parse_user_changes
from homeserver.appstate import ADMIN_USERS, CONFIG, REGISTRATION
from homeserver.client.routes import MAX_DEVICE_ID_LENGTH
from homeserver.client.validate import optional_bool, optional_int, optional_str, require_str
from homeserver.errors import bad_json, missing_param
from homeserver.http import json_response, path_param, query_param, read_json_body
from homeserver.storage.admin_users import USER_ORDER_COLUMNS, RateLimitOverride, UserFilter

from .common import (
    bool_param,
    choice_param,
    direction_param,
    page_params,
    require_admin,
    str_param,
    user_id_path,
)


def _device_id(request: web.Request) -> str:
    value = str(path_param(request, "device_id"))
    if len(value) > MAX_DEVICE_ID_LENGTH:
        raise bad_json("device_id is too long")
    return value


async def _list(request: web.Request, *, v3: bool) -> web.Response:
    await require_admin(request)
    page = page_params(request)
    deactivated = bool_param(request, "deactivated")
    user_filter = UserFilter(
        name=str_param(request, "name"),
        user_id=str_param(request, "user_id"),
        guests=bool(bool_param(request, "guests", True)),
        # v2: deactivated users only with deactivated=true; v3: filter on the flag.
        deactivated=deactivated if v3 else (None if deactivated else False),
        admins=bool_param(request, "admins"),
        locked=bool(bool_param(request, "locked", False)),
        not_user_types=tuple(request.query.getall("not_user_type", [])),
    )
    order_by = choice_param(request, "order_by", USER_ORDER_COLUMNS, "name") or "name"
    descending = direction_param(request) == "b"
    body = await request.config_dict[ADMIN_USERS].list_users(
        page, user_filter, order_by, descending
    )
    return json_response(body)


async def list_users_v2(request: web.Request) -> web.Response:
    return await _list(request, v3=False)


async def list_users_v3(request: web.Request) -> web.Response:
    return await _list(request, v3=True)


async def get_user(request: web.Request) -> web.Response:
    await require_admin(request)
    return json_response(await request.config_dict[ADMIN_USERS].get_user(user_id_path(request)))


async def _two_path_params(request: web.Request, first: str, second: str) -> tuple[str, str]:
    """An admin's lookup by two path parts (each at most 1 KiB)."""
    await require_admin(request)
    values = (str(path_param(request, first)), str(path_param(request, second)))
    if any(len(v) > 1024 for v in values):
        raise bad_json(f"{first} or {second} is too long")
    return values


async def user_of_threepid(request: web.Request) -> web.Response:
    medium, address = await _two_path_params(request, "medium", "address")
    return json_response(await request.config_dict[ADMIN_USERS].user_of_threepid(medium, address))


async def user_of_external_id(request: web.Request) -> web.Response:
    provider, external_id = await _two_path_params(request, "provider", "external_id")
    users = request.config_dict[ADMIN_USERS]
    return json_response(await users.user_of_external_id(provider, external_id))


async def put_user(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    user_id = user_id_path(request)
    extra = request.config_dict[CONFIG].registration.extra_user_types  # user_types
    changes = parse_user_changes(await read_json_body(request), extra)
    created, body = await request.config_dict[ADMIN_USERS].put_user(admin.user_id, user_id, changes)
    return json_response(body, status=201 if created else 200)


async def deactivate(request: web.Request) -> web.Response:
    await require_admin(request)
    user_id = user_id_path(request)
    body = await read_json_body(request, allow_empty=True)
    erase = optional_bool(body, "erase")
    return json_response(await request.config_dict[ADMIN_USERS].deactivate(user_id, erase=erase))


async def reset_password(request: web.Request) -> web.Response:
    await require_admin(request)
    user_id = user_id_path(request)
    body = await read_json_body(request)
    password = require_str(body, "new_password", max_len=MAX_PASSWORD_LENGTH)
    logout = optional_bool(body, "logout_devices", default=True)
    await request.config_dict[ADMIN_USERS].reset_password(user_id, password, logout)
    return json_response({})


async def whois(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    user_id = user_id_path(request)
    return json_response(await request.config_dict[ADMIN_USERS].whois(admin.user_id, user_id))


async def get_admin_flag(request: web.Request) -> web.Response:
    await require_admin(request)
    admin = await request.config_dict[ADMIN_USERS].get_admin(user_id_path(request))
    return json_response({"admin": admin})


async def put_admin_flag(request: web.Request) -> web.Response:
    requester = await require_admin(request)
    user_id = user_id_path(request)
    body = await read_json_body(request)
    if not isinstance(body.get("admin"), bool):
        raise missing_param("Missing 'admin' (a boolean)")
    await request.config_dict[ADMIN_USERS].set_admin(requester.user_id, user_id, body["admin"])
    return json_response({})


async def login_as(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    user_id = user_id_path(request)
    body = await read_json_body(request, allow_empty=True)
    valid_until = optional_int(body, "valid_until_ms")
    token = await request.config_dict[ADMIN_USERS].login_as(admin.user_id, user_id, valid_until)
    return json_response({"access_token": token})


async def suspend(request: web.Request) -> web.Response:
    await require_admin(request)
    user_id = user_id_path(request)
    body = await read_json_body(request)
    if not isinstance(body.get("suspend"), bool):
        raise bad_json("'suspend' must be a boolean")
    await request.config_dict[ADMIN_USERS].set_flag(user_id, "suspended", body["suspend"])
    return json_response({f"user_{user_id}_suspended": body["suspend"]})


async def shadow_ban(request: web.Request) -> web.Response:
    await require_admin(request)
    user_id = user_id_path(request)
    await request.config_dict[ADMIN_USERS].set_flag(user_id, "shadow_banned", True)
    return json_response({})


async def unshadow_ban(request: web.Request) -> web.Response:
    await require_admin(request)
    user_id = user_id_path(request)
    await request.config_dict[ADMIN_USERS].set_flag(user_id, "shadow_banned", False)
    return json_response({})


async def get_ratelimit(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await request.config_dict[ADMIN_USERS].get_ratelimit(user_id_path(request))
    return json_response(body)


async def set_ratelimit(request: web.Request) -> web.Response:
    await require_admin(request)
    user_id = user_id_path(request)
    body = await read_json_body(request, allow_empty=True)
    values = {}
    for key in ("messages_per_second", "burst_count"):
        value = body.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
            raise bad_json(f"{key!r} must be a positive integer")
        values[key] = value
    override = RateLimitOverride(values["messages_per_second"], values["burst_count"])
    return json_response(await request.config_dict[ADMIN_USERS].set_ratelimit(user_id, override))


async def delete_ratelimit(request: web.Request) -> web.Response:
    await require_admin(request)
    await request.config_dict[ADMIN_USERS].delete_ratelimit(user_id_path(request))
    return json_response({})


async def list_devices(request: web.Request) -> web.Response:
    await require_admin(request)
    return json_response(await request.config_dict[ADMIN_USERS].devices(user_id_path(request)))


async def create_device(request: web.Request) -> web.Response:
    await require_admin(request)
    user_id = user_id_path(request)
    body = await read_json_body(request)
    device_id = require_str(body, "device_id", max_len=MAX_DEVICE_ID_LENGTH)
    await request.config_dict[ADMIN_USERS].create_device(user_id, device_id)
    return json_response({})


async def delete_devices(request: web.Request) -> web.Response:
    await require_admin(request)
    user_id = user_id_path(request)
    body = await read_json_body(request)
    devices = body.get("devices")
    if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
        raise bad_json("'devices' must be a list of device IDs")
    if len(devices) > 1000:
        raise bad_json("At most 1000 devices at once")
    await request.config_dict[ADMIN_USERS].delete_devices(user_id, devices)
    return json_response({})


async def get_device(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await request.config_dict[ADMIN_USERS].device(user_id_path(request), _device_id(request))
    return json_response(body)


async def put_device(request: web.Request) -> web.Response:
    await require_admin(request)
    user_id, device_id = user_id_path(request), _device_id(request)
    body = await read_json_body(request, allow_empty=True)
    name = optional_str(body, "display_name", max_len=1000)
    await request.config_dict[ADMIN_USERS].rename_device(user_id, device_id, name)
    return json_response({})


async def delete_device(request: web.Request) -> web.Response:
    await require_admin(request)
    user_id, device_id = user_id_path(request), _device_id(request)
    await request.config_dict[ADMIN_USERS].delete_devices(user_id, [device_id])
    return json_response({})


async def joined_rooms(request: web.Request) -> web.Response:
    await require_admin(request)
    return json_response(await request.config_dict[ADMIN_USERS].joined_rooms(user_id_path(request)))


async def memberships(request: web.Request) -> web.Response:
    await require_admin(request)
    return json_response(await request.config_dict[ADMIN_USERS].memberships(user_id_path(request)))


async def pushers(request: web.Request) -> web.Response:
    await require_admin(request)
    return json_response(await request.config_dict[ADMIN_USERS].pushers(user_id_path(request)))


async def account_data(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await request.config_dict[ADMIN_USERS].account_data(user_id_path(request))
    return json_response(body)


async def username_available(request: web.Request) -> web.Response:
    await require_admin(request)
    username = query_param(request, "username", required=True)
    await request.config_dict[REGISTRATION].check_available(username)
    return json_response({"available": True})


# -- the client API's account moderation (spec v1.18: /_matrix/client/v1/admin/...) ------

# spec field -> the moderation flag it shows
_CLIENT_FLAGS = {"suspended": "suspended", "locked": "locked"}


async def _get_client_flag(request: web.Request, field: str) -> web.Response:
    await require_admin(request)
    user = await request.config_dict[ADMIN_USERS].existing(user_id_path(request), "moderate")
    return json_response({field: getattr(user, _CLIENT_FLAGS[field])})


async def _put_client_flag(request: web.Request, field: str) -> web.Response:
    await require_admin(request)
    user_id = user_id_path(request)
    body = await read_json_body(request)
    if not isinstance(body.get(field), bool):
        raise bad_json(f"'{field}' must be a boolean")
    await request.config_dict[ADMIN_USERS].set_flag(user_id, _CLIENT_FLAGS[field], body[field])
    return json_response({field: body[field]})


async def get_suspended(request: web.Request) -> web.Response:
    return await _get_client_flag(request, "suspended")


async def put_suspended(request: web.Request) -> web.Response:
    return await _put_client_flag(request, "suspended")


async def get_locked(request: web.Request) -> web.Response:
    return await _get_client_flag(request, "locked")


async def put_locked(request: web.Request) -> web.Response:
    return await _put_client_flag(request, "locked")


def add_client_routes(client: web.Application) -> None:
    r = client.router
    r.add_get("/v1/admin/suspend/{user_id}", get_suspended)
    r.add_put("/v1/admin/suspend/{user_id}", put_suspended)
    r.add_get("/v1/admin/lock/{user_id}", get_locked)
    r.add_put("/v1/admin/lock/{user_id}", put_locked)


def add_routes(admin: web.Application) -> None:
    r = admin.router
    r.add_get("/v2/users", list_users_v2)
    r.add_get("/v3/users", list_users_v3)
    r.add_get("/v2/users/{user_id}", get_user)
    r.add_put("/v2/users/{user_id}", put_user)
    r.add_get("/v1/threepid/{medium}/users/{address}", user_of_threepid)
    r.add_get("/v1/auth_providers/{provider}/users/{external_id}", user_of_external_id)
    r.add_post("/v1/deactivate/{user_id}", deactivate)
    r.add_post("/v1/reset_password/{user_id}", reset_password)
    r.add_get("/v1/whois/{user_id}", whois)
    r.add_get("/v1/users/{user_id}/admin", get_admin_flag)
    r.add_put("/v1/users/{user_id}/admin", put_admin_flag)
    r.add_post("/v1/users/{user_id}/login", login_as)
    r.add_put("/v1/suspend/{user_id}", suspend)
    r.add_post("/v1/users/{user_id}/shadow_ban", shadow_ban)
    r.add_delete("/v1/users/{user_id}/shadow_ban", unshadow_ban)
    r.add_get("/v1/users/{user_id}/override_ratelimit", get_ratelimit)
    r.add_post("/v1/users/{user_id}/override_ratelimit", set_ratelimit)
    r.add_delete("/v1/users/{user_id}/override_ratelimit", delete_ratelimit)
    r.add_get("/v2/users/{user_id}/devices", list_devices)
    r.add_post("/v2/users/{user_id}/devices", create_device)
    r.add_post("/v2/users/{user_id}/delete_devices", delete_devices)
    r.add_get("/v2/users/{user_id}/devices/{device_id}", get_device)
    r.add_put("/v2/users/{user_id}/devices/{device_id}", put_device)
    r.add_delete("/v2/users/{user_id}/devices/{device_id}", delete_device)
    r.add_get("/v1/users/{user_id}/joined_rooms", joined_rooms)
    r.add_get("/v1/users/{user_id}/memberships", memberships)
    r.add_get("/v1/users/{user_id}/pushers", pushers)
    r.add_get("/v1/users/{user_id}/accountdata", account_data)
    r.add_get("/v1/username_available", username_available)
