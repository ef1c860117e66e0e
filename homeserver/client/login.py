"""GET/POST /login, POST /login/get_token, /logout, /logout/all, /refresh."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.accounts.jwt_login import LOGIN_TYPE as JWT_LOGIN_TYPE
from homeserver.accounts.passwords import MAX_PASSWORD_LENGTH
from homeserver.accounts.uia import PASSWORD, identifier_user
from homeserver.appstate import (
    APP_SERVICES,
    CONFIG,
    JWT_LOGIN,
    RATE_LIMITERS,
    SESSIONS,
    SSO_SERVICE,
    STORES,
    THREEPIDS,
    UIA,
)
from homeserver.client.auth import extract_access_token, get_requester
from homeserver.client.routes import add_route, client_ip, device_id_field
from homeserver.client.validate import optional_bool, optional_dict, require_str
from homeserver.errors import MatrixError, bad_json, forbidden, missing_param
from homeserver.http import json_response, read_json_body

MAX_DISPLAY_NAME = 1024
MAX_TOKEN_INPUT = 1024
MAX_JWT_INPUT = 8192


async def get_login(request: web.Request) -> web.Response:
    flows: list[dict[str, Any]] = [
        {"type": "m.login.token", "get_login_token": True},
        {"type": "m.login.application_service"},
    ]
    if request.config_dict[CONFIG].passwords.enabled:
        flows.insert(0, {"type": "m.login.password"})
    sso = request.config_dict[SSO_SERVICE]
    if sso.enabled:
        flows.insert(len(flows) - 2, sso.login_flow())
    if request.config_dict[JWT_LOGIN] is not None:
        flows.insert(len(flows) - 2, {"type": JWT_LOGIN_TYPE})
    return json_response({"flows": flows})


async def post_login(request: web.Request) -> web.Response:
    body = await read_json_body(request)
    kind = require_str(body, "type", max_len=255)
    device_id = device_id_field(body)
    display_name = body.get("initial_device_display_name")
    if display_name is not None and (
        not isinstance(display_name, str) or len(display_name) > MAX_DISPLAY_NAME
    ):
        raise bad_json("'initial_device_display_name' must be a string")
    refreshable = optional_bool(body, "refresh_token")
    sessions = request.config_dict[SESSIONS]
    common: dict[str, Any] = {
        "address": client_ip(request),
        "device_id": device_id,
        "display_name": display_name,
        "refreshable": refreshable,
    }
    if kind == "m.login.password":
        if not request.config_dict[CONFIG].passwords.enabled:
            raise MatrixError(400, "M_UNKNOWN", "Password login has been disabled")
        user = await _password_login_user(request, body)
        password = require_str(body, "password", max_len=MAX_PASSWORD_LENGTH)
        session = await sessions.login_with_password(user, password, **common)
    elif kind == "m.login.token":
        token = require_str(body, "token", max_len=MAX_TOKEN_INPUT)
        session = await sessions.login_with_token(token, **common)
    elif kind == "m.login.application_service":
        session = await _app_service_login(request, body, common)
    elif kind == JWT_LOGIN_TYPE and (jwt_login := request.config_dict[JWT_LOGIN]) is not None:
        token = require_str(body, "token", max_len=MAX_JWT_INPUT)
        request.config_dict[RATE_LIMITERS].check("login_address", common.pop("address"))
        session = await jwt_login.login(token, **common)
    else:
        raise MatrixError(400, "M_UNKNOWN", "Unknown login type")
    response = session.to_json(request.config_dict[CONFIG].server_name)
    base_url = request.config_dict[CONFIG].well_known.client_base_url
    if request.config_dict[CONFIG].public_baseurl and base_url:
        response["well_known"] = {"m.homeserver": {"base_url": base_url}}
    return json_response(response)


async def _password_login_user(request: web.Request, body: dict[str, Any]) -> str:
    """Who a password login names: a user ID or localpart, or an email address one of
    our accounts holds (`m.id.thirdparty`, or the legacy top-level medium/address).
    An unknown address fails as an unknown user does (the same 403 as a wrong
    password, under the same rate limits: no telling which addresses have accounts)."""
    identifier = body.get("identifier")
    if isinstance(identifier, dict) and identifier.get("type") == "m.id.thirdparty":
        medium, address = identifier.get("medium"), identifier.get("address")
    elif identifier is None and "user" not in body and "address" in body:
        medium, address = body.get("medium"), body.get("address")
    else:
        user = identifier_user(body)
        if user is None:
            raise missing_param("Missing 'identifier'")
        return user
    if not isinstance(medium, str) or not isinstance(address, str) or len(address) > 512:
        raise bad_json("'medium' and 'address' must be strings")
    if medium != "email":
        raise MatrixError(400, "M_UNKNOWN", "Only email addresses can be used to log in")
    owner = await request.config_dict[THREEPIDS].owner(medium, address)
    return owner or "@" + address.strip().lower()  # no such user: fails as one


async def _app_service_login(
    request: web.Request, body: dict[str, Any], common: dict[str, Any]
) -> Any:
    """An appservice logs in one of its namespace's users (with its as_token)."""
    token = extract_access_token(request)
    services = request.config_dict.get(APP_SERVICES)
    service = services.by_token(token) if services and token else None
    if service is None:
        raise MatrixError(401, "M_UNKNOWN_TOKEN", "An application service token is required")
    user = identifier_user(body)
    if user is None:
        raise missing_param("Missing 'identifier'")
    user_id = user if user.startswith("@") else f"@{user}:{request.config_dict[CONFIG].server_name}"
    if not service.is_user_in_namespace(user_id):
        raise MatrixError(403, "M_EXCLUSIVE", "User is not in this appservice's namespace")
    if await request.config_dict[STORES].accounts.get_user(user_id) is None:
        raise forbidden("No such user")
    return await request.config_dict[SESSIONS].create_session(
        user_id, common["device_id"], common["display_name"], refreshable=common["refreshable"]
    )


async def post_get_token(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    body = await read_json_body(request, allow_empty=True)
    uia = request.config_dict[UIA]
    result = await uia.authenticate(
        optional_dict(body, "auth"),
        [[PASSWORD]],
        uri="/login/get_token",
        method="POST",
        user_id=requester.user_id,
        token_id=requester.token_id,
    )
    token, lifetime = await request.config_dict[SESSIONS].issue_login_token(requester.user_id)
    await uia.finish(result)
    return json_response({"login_token": token, "expires_in_ms": lifetime})


async def post_logout(request: web.Request) -> web.Response:
    requester = await get_requester(request, allow_locked=True)
    await request.config_dict[SESSIONS].logout(
        requester.user_id, requester.device_id, requester.access_token
    )
    return json_response({})


async def post_logout_all(request: web.Request) -> web.Response:
    requester = await get_requester(request, allow_locked=True)
    await request.config_dict[SESSIONS].logout_all(requester.user_id)
    return json_response({})


async def post_refresh(request: web.Request) -> web.Response:
    body = await read_json_body(request)
    refresh_token = require_str(body, "refresh_token", max_len=MAX_TOKEN_INPUT)
    session = await request.config_dict[SESSIONS].refresh(refresh_token)
    return json_response(
        {
            "access_token": session.access_token,
            "refresh_token": session.refresh_token,
            "expires_in_ms": session.expires_in_ms,
        }
    )


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/login", get_login)
    add_route(app, "POST", "/login", post_login)
    add_route(app, "POST", "/login/get_token", post_get_token, prefixes=("/v1",))
    add_route(app, "POST", "/logout", post_logout)
    add_route(app, "POST", "/logout/all", post_logout_all)
    add_route(app, "POST", "/refresh", post_refresh, prefixes=("/v3", "/v1"))
