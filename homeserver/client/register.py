"""POST /register (UIA), GET /register/available, registration-token validity.

Guests (`kind=guest`, when `allow_guest_access` is on) get an account without UIA; a
guest becomes a full user by registering with its `guest_access_token`. With an
`email` section, a flow with m.login.email.identity registers with a validated email
address (homeserver/client/threepids.py mails it), which the new account then holds.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from homeserver.accounts.passwords import MAX_PASSWORD_LENGTH, check_password_policy
from homeserver.appstate import (
    APP_SERVICES,
    AUTO_JOIN,
    CONFIG,
    PUSH_STORE,
    RATE_LIMITERS,
    REGISTRATION,
    STORES,
    THREEPIDS,
    UIA,
)
from homeserver.client.auth import extract_access_token
from homeserver.client.pushers import email_pusher
from homeserver.client.resource_limits import check_registration, registered
from homeserver.client.routes import add_route, client_ip, device_id_field
from homeserver.client.validate import optional_bool, optional_dict, optional_str
from homeserver.config import Config
from homeserver.errors import MatrixError, forbidden, invalid_param, missing_token, unknown_token
from homeserver.http import json_response, query_param, read_json_body

logger = logging.getLogger(__name__)

# Long enough for any legal username, short enough to fail fast on junk.
MAX_USERNAME_INPUT = 1024
MAX_DISPLAY_NAME = 1024


def _kind(request: web.Request) -> str:
    kind = query_param(request, "kind", default="user")
    if kind not in ("user", "guest"):
        raise invalid_param("'kind' must be 'user' or 'guest'")
    return kind


async def _register_guest(request: web.Request) -> web.Response:
    """A guest account: no UIA, but the same per-IP registration budget."""
    body = await read_json_body(request, allow_empty=True)
    limiters = request.config_dict[RATE_LIMITERS]
    limiters.check("registration", client_ip(request))
    await check_registration(request, None)
    response = await request.config_dict[REGISTRATION].register_guest(
        device_id=device_id_field(body),
        display_name=optional_str(body, "initial_device_display_name", max_len=MAX_DISPLAY_NAME),
        refreshable=optional_bool(body, "refresh_token"),
    )
    await request.config_dict[AUTO_JOIN].new_user(response["user_id"], guest=True)
    return json_response(response)


async def _guest_user_id(request: web.Request, token: str) -> str | None:
    info = await request.config_dict[STORES].accounts.get_token(token)
    return None if info is None else info.user_id


def _check_exclusive(request: web.Request, username: str) -> None:
    """No one but its appservice registers a user ID of an exclusive namespace."""
    services = request.config_dict.get(APP_SERVICES)
    if services:
        user_id = request.config_dict[REGISTRATION].user_id_for(username)
        if services.exclusive_owner_of_user(user_id) is not None:
            raise MatrixError(
                400, "M_EXCLUSIVE", "This user ID is reserved by an application service"
            )


async def _register_app_service_user(request: web.Request, body: dict[str, Any]) -> web.Response:
    """`type: m.login.application_service`: an appservice creates a user of its
    namespace (no password, no UIA; registration may be closed to everyone else)."""
    token = extract_access_token(request)
    if token is None:
        raise missing_token()
    services = request.config_dict.get(APP_SERVICES)
    service = services.by_token(token) if services else None
    if service is None:
        raise unknown_token()
    username = optional_str(body, "username", max_len=MAX_USERNAME_INPUT)
    if username is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing 'username'")
    registration = request.config_dict[REGISTRATION]
    user_id = registration.user_id_for(username)
    if not service.is_user_in_namespace(user_id):
        raise MatrixError(400, "M_EXCLUSIVE", "User ID is not in this appservice's namespace")
    response = await registration.register(
        username=username,
        password=None,
        device_id=device_id_field(body),
        display_name=optional_str(body, "initial_device_display_name", max_len=MAX_DISPLAY_NAME),
        inhibit_login=optional_bool(body, "inhibit_login"),
        refreshable=optional_bool(body, "refresh_token"),
    )
    return json_response(response)


async def post_register(request: web.Request) -> web.Response:
    if _kind(request) == "guest":
        return await _register_guest(request)
    body = await read_json_body(request)
    if body.get("type") == "m.login.application_service":
        return await _register_app_service_user(request, body)
    if not request.config_dict[CONFIG].registration.enabled:
        raise forbidden("Registration has been disabled")
    username = optional_str(body, "username", max_len=MAX_USERNAME_INPUT)
    password = optional_str(body, "password", max_len=MAX_PASSWORD_LENGTH)
    passwords = request.config_dict[CONFIG].passwords
    if password is not None and not passwords.enabled:
        password = None  # password_config disables them: the account signs in otherwise
    if password is not None:
        check_password_policy(passwords.policy, password)  # before UIA, as Synapse
    device_id = device_id_field(body)
    display_name = optional_str(body, "initial_device_display_name", max_len=MAX_DISPLAY_NAME)
    inhibit_login = optional_bool(body, "inhibit_login")
    refreshable = optional_bool(body, "refresh_token")
    auth = optional_dict(body, "auth")
    registration = request.config_dict[REGISTRATION]
    guest_token = optional_str(body, "guest_access_token", max_len=1024)
    upgrading: str | None = None
    if guest_token is not None:
        guest = await _guest_user_id(request, guest_token)
        upgrading = await registration.guest_to_upgrade(guest, username)
    elif username is not None:
        _check_exclusive(request, username)
        await registration.check_requested(username)  # tell the client before UIA
    limiters = request.config_dict[RATE_LIMITERS]
    ip = client_ip(request)
    # As Synapse: an IP over its registration budget is refused before any work; and
    # every anonymous UIA session (a database row) is paid for first.
    limiters.get("registration").peek(ip)
    if isinstance(auth, dict) and auth.get("type") == "m.login.recaptcha":
        limiters.check("registration_sessions", ip)  # each costs a captcha service request
    uia = request.config_dict[UIA]
    result = await uia.authenticate(
        auth,
        registration.flows,
        uri="/register",
        method="POST",
        params=uia_params(request.config_dict[CONFIG]),
        before_new_session=lambda: limiters.check("registration_sessions", ip),
    )
    limiters.check("registration", ip)
    email_session = None
    if "threepid_sid" in result.data:
        # Used once, before the account exists: a replay or a racing registration
        # with the same session fails here instead of making a second account.
        threepids = request.config_dict[THREEPIDS]
        email_session = await threepids.validated(
            "registration", result.data["threepid_sid"], result.data["threepid_client_secret"]
        )
        if await threepids.owner(email_session.medium, email_session.address) is not None:
            raise MatrixError(400, "M_THREEPID_IN_USE", "Email is already in use")
    threepid = (email_session.medium, email_session.address) if email_session else None
    await check_registration(request, threepid)  # disabled, or full (MAU)
    if email_session is not None:
        await request.config_dict[THREEPIDS].consume(email_session)
    if upgrading is not None:
        response = await registration.upgrade_guest(
            upgrading,
            password=password,
            device_id=device_id,
            display_name=display_name,
            inhibit_login=inhibit_login,
            refreshable=refreshable,
        )
        await _add_email(request, upgrading, email_session)
        await registration.record_consent(upgrading, result.data.get("consent_version"))
        await uia.finish(result)
        return json_response(response)
    response = await registration.register(
        username=username,
        password=password,
        device_id=device_id,
        display_name=display_name,
        inhibit_login=inhibit_login,
        refreshable=refreshable,
        registration_token=result.data.get("registration_token"),
    )
    await registered(request, response["user_id"], threepid)
    await _add_email(request, response["user_id"], email_session)
    await registration.record_consent(response["user_id"], result.data.get("consent_version"))
    await uia.finish(result)
    await request.config_dict[AUTO_JOIN].new_user(response["user_id"])
    return json_response(response)


async def _add_email(request: web.Request, user_id: str, session: Any) -> None:
    """The account registered with a validated address holds it (if no one took it in
    the moment since the check: then it registers without, as the log says)."""
    if session is None:
        return
    try:
        await request.config_dict[THREEPIDS].add_to_user(user_id, session)
    except MatrixError:
        logger.warning("%s registered but %s was taken meanwhile", user_id, session.address)
        return
    email = request.config_dict[CONFIG].threepids.email
    if email is not None and email.enable_notifs and email.notif_for_new_users:
        pusher = email_pusher(user_id, session.address)
        await request.config_dict[PUSH_STORE].set_pusher(pusher, append=True)


def uia_params(config: Config) -> dict[str, Any]:
    """What the registration stages tell the client: the captcha's site key, the
    policy to accept (name, version, where to read it)."""
    params: dict[str, Any] = {}
    captcha = config.registration.captcha
    if captcha is not None:
        params["m.login.recaptcha"] = {"public_key": captcha.public_key}
    consent = config.registration.consent
    if consent is not None and consent.require_at_registration:
        url = f"{config.public_baseurl}_matrix/consent?v={consent.version}"
        policy = {"version": consent.version, "en": {"name": consent.policy_name, "url": url}}
        params["m.login.terms"] = {"policies": {"privacy_policy": policy}}
    return params


async def get_consent_policy(request: web.Request) -> web.Response:
    """GET /_matrix/consent: the policy users accept at registration (the operator's
    HTML file; no scripts run on our origin from it)."""
    consent = request.config_dict[CONFIG].registration.consent
    version = request.query.get("v")
    if consent is None or (version is not None and version != consent.version):
        raise MatrixError(404, "M_NOT_FOUND", "No such policy")
    return web.Response(
        body=consent.policy_file.read_bytes(),
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": "script-src 'none'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def get_available(request: web.Request) -> web.Response:
    username = query_param(request, "username", required=True)
    if len(username) > MAX_USERNAME_INPUT:
        raise MatrixError(400, "M_INVALID_USERNAME", "Username is too long")
    _check_exclusive(request, username)
    await request.config_dict[REGISTRATION].check_requested(username)
    return json_response({"available": True})


async def get_token_validity(request: web.Request) -> web.Response:
    registration_config = request.config_dict[CONFIG].registration
    if not (registration_config.enabled and registration_config.requires_token):
        raise forbidden("Registration tokens are not enabled on this server")
    request.config_dict[RATE_LIMITERS].check("registration_token_validity", client_ip(request))
    token = query_param(request, "token", required=True)
    valid = len(token) <= 64 and await request.config_dict[REGISTRATION].registration_token_valid(
        token
    )
    return json_response({"valid": valid})


def add_routes(app: web.Application) -> None:
    add_route(app, "POST", "/register", post_register)
    add_route(app, "GET", "/register/available", get_available)
    add_route(
        app,
        "GET",
        "/register/m.login.registration_token/validity",
        get_token_validity,
        prefixes=("/v1",),
    )
