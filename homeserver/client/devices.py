"""Device management: list, get, rename, delete (UIA), bulk delete (UIA), and the
middleware that keeps each device's last_seen_ts / last_seen_ip fresh."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.accounts.uia import PASSWORD
from homeserver.appstate import LAST_SEEN, SESSIONS, STORES, UIA
from homeserver.client.auth import MAX_TOKEN_LENGTH, extract_access_token, get_requester
from homeserver.client.routes import MAX_DEVICE_ID_LENGTH, add_route, client_ip
from homeserver.client.validate import optional_dict, optional_str, require_str_list
from homeserver.errors import MatrixError, not_found
from homeserver.http import TOKEN_INFO_KEY, Handler, json_response, path_param, read_json_body
from homeserver.storage import DeviceInfo

MAX_DISPLAY_NAME = 1024
MAX_BULK_DELETE = 1000


def device_json(device: DeviceInfo) -> dict[str, Any]:
    body: dict[str, Any] = {"device_id": device.device_id}
    if device.display_name is not None:
        body["display_name"] = device.display_name
    if device.last_seen_ip is not None:
        body["last_seen_ip"] = device.last_seen_ip
    if device.last_seen_ts is not None:
        body["last_seen_ts"] = device.last_seen_ts
    return body


def _device_id(request: web.Request) -> str:
    def check(value: str) -> str:
        if not value or len(value) > MAX_DEVICE_ID_LENGTH:
            raise ValueError("device ID must be 1 to 255 characters")
        return value

    return path_param(request, "device_id", check)  # type: ignore[return-value]


async def get_devices(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    await request.config_dict[LAST_SEEN].flush()
    devices = await request.config_dict[STORES].accounts.get_devices(requester.user_id)
    return json_response({"devices": [device_json(d) for d in devices]})


async def get_device(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    device_id = _device_id(request)
    await request.config_dict[LAST_SEEN].flush()
    device = await request.config_dict[STORES].accounts.get_device(requester.user_id, device_id)
    if device is None:
        raise not_found("Unknown device")
    return json_response(device_json(device))


async def put_device(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    device_id = _device_id(request)
    body = await read_json_body(request)
    display_name = optional_str(body, "display_name", max_len=MAX_DISPLAY_NAME)
    accounts = request.config_dict[STORES].accounts
    if await accounts.get_device(requester.user_id, device_id) is None:
        if requester.app_service_id is None:
            raise not_found("Unknown device")
        # An appservice creates devices for its users (MSC4190, spec v1.17).
        await accounts.upsert_device(requester.user_id, device_id, display_name)
        return json_response({}, status=201)
    if display_name is not None:
        await request.config_dict[SESSIONS].rename_device(
            requester.user_id, device_id, display_name
        )
    return json_response({})


async def _delete_with_uia(
    request: web.Request, body: dict[str, Any], device_ids: list[str], uri: str
) -> web.Response:
    requester = await get_requester(request)
    if requester.app_service_id is not None:
        # An appservice manages its users' devices without UIA (MSC4190).
        await request.config_dict[SESSIONS].delete_devices(requester.user_id, device_ids)
        return json_response({})
    uia = request.config_dict[UIA]
    result = await uia.authenticate(
        optional_dict(body, "auth"),
        [[PASSWORD]],
        uri=uri,
        method=request.method,
        user_id=requester.user_id,
        token_id=requester.token_id,
        can_skip=True,  # tidying up devices one after another (ui_auth.session_timeout)
    )
    await request.config_dict[SESSIONS].delete_devices(requester.user_id, device_ids)
    await uia.finish(result)
    return json_response({})


async def delete_device(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    device_id = _device_id(request)
    body = await read_json_body(request, allow_empty=True)
    accounts = request.config_dict[STORES].accounts
    if await accounts.get_device(requester.user_id, device_id) is None:
        raise not_found("Unknown device")
    return await _delete_with_uia(request, body, [device_id], f"/devices/{device_id}")


async def post_delete_devices(request: web.Request) -> web.Response:
    await get_requester(request)
    body = await read_json_body(request)
    device_ids = require_str_list(
        body, "devices", max_items=MAX_BULK_DELETE, max_len=MAX_DEVICE_ID_LENGTH
    )
    return await _delete_with_uia(request, body, device_ids, "/delete_devices")


@web.middleware
async def last_seen_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """After a successful authenticated request, note where the device was seen.

    Uses the token's row get_requester noted on the request (or, for a handler that
    did not authenticate, reads it again from the cached token table); at most one
    UPDATE per token per minute.
    """
    response = await handler(request)
    if response.status >= 400:
        return response
    info = request.get(TOKEN_INFO_KEY)  # the handler authenticated (nearly all do)
    if info is None:
        try:
            token = extract_access_token(request)
        except MatrixError:
            token = None
        if token is not None and 0 < len(token) <= MAX_TOKEN_LENGTH and token.isascii():
            info = await request.config_dict[STORES].accounts.get_token(token)
    if info is not None:
        request.config_dict[LAST_SEEN].seen(
            info.token_id,
            info.user_id,
            info.device_id,
            client_ip(request),
            request.headers.get("User-Agent"),
        )
    return response


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/devices", get_devices)
    add_route(app, "GET", "/devices/{device_id}", get_device)
    add_route(app, "PUT", "/devices/{device_id}", put_device)
    add_route(app, "DELETE", "/devices/{device_id}", delete_device)
    add_route(app, "POST", "/delete_devices", post_delete_devices)
    app.middlewares.append(last_seen_middleware)
