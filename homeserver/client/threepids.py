"""Email addresses on the client API: requestToken (adding one, registering with one,
resetting a password), `/account/3pid` (list, add, delete), password reset by email on
POST /account/password, and the page the mailed link opens.

The service is homeserver/accounts/threepids.py; without an `email` section every
requestToken answers 403 M_THREEPID_DENIED, as before this existed. Phone numbers
(msisdn) need SMS sending and are always refused.
"""

from __future__ import annotations

from html import escape
from typing import Any

from aiohttp import web

from homeserver.accounts.identity import id_server_param
from homeserver.accounts.threepids import (
    ADD,
    LINK_SEGMENTS,
    PASSWORD_RESET,
    REGISTRATION,
    canonical_email,
    check_client_secret,
)
from homeserver.accounts.uia import EMAIL_IDENTITY, PASSWORD
from homeserver.appstate import (
    ACCOUNT_LIFECYCLE,
    IDENTITY_BINDS,
    PUSH_STORE,
    RATE_LIMITERS,
    THREEPIDS,
    UIA,
)
from homeserver.client.auth import extract_access_token, get_requester
from homeserver.client.pages import PAGE_HEADERS, page
from homeserver.client.pushers import delete_email_pushers
from homeserver.client.routes import add_route, client_ip, new_password_field, threepid_denied
from homeserver.client.validate import optional_bool, optional_dict, optional_str, require_str
from homeserver.errors import MatrixError, bad_json
from homeserver.http import json_response, read_json_body

MAX_SECRET_INPUT = 255


async def _request_token(request: web.Request, purpose: str) -> web.Response:
    threepids = request.config_dict[THREEPIDS]
    if not threepids.email_enabled:
        return await threepid_denied(request)
    body = await read_json_body(request)
    email = require_str(body, "email", max_len=1024)
    client_secret = require_str(body, "client_secret", max_len=MAX_SECRET_INPUT)
    if "send_attempt" not in body:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing 'send_attempt'")
    send_attempt = body["send_attempt"]
    if not isinstance(send_attempt, int) or isinstance(send_attempt, bool):
        raise bad_json("'send_attempt' must be an integer")
    next_link = optional_str(body, "next_link", max_len=4096)
    # Each request may mail someone: bounded per client and per address (Synapse's
    # rc_3pid_validation), before any work.
    limiters = request.config_dict[RATE_LIMITERS]
    limiters.check("threepid_validation", client_ip(request))
    limiters.check("threepid_validation", "email:" + email.strip().lower())
    sid = await threepids.request_token(purpose, email, client_secret, send_attempt, next_link)
    return json_response({"sid": sid})


async def post_add_request_token(request: web.Request) -> web.Response:
    return await _request_token(request, ADD)


async def post_register_request_token(request: web.Request) -> web.Response:
    return await _request_token(request, REGISTRATION)


async def post_password_request_token(request: web.Request) -> web.Response:
    return await _request_token(request, PASSWORD_RESET)


async def get_threepids(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    listed = await request.config_dict[THREEPIDS].of_user(requester.user_id)
    return json_response({"threepids": [t.to_json() for t in listed]})


def _session_fields(body: dict[str, Any]) -> tuple[str, str]:
    sid = require_str(body, "sid", max_len=255)
    client_secret = check_client_secret(
        require_str(body, "client_secret", max_len=MAX_SECRET_INPUT)
    )
    return sid, client_secret


async def post_threepid_add(request: web.Request) -> web.Response:
    """POST /account/3pid/add: the user proves who they are (UIA) and that they read
    the mail (a validated session of theirs), and the address becomes theirs."""
    requester = await get_requester(request)
    body = await read_json_body(request)
    threepids = request.config_dict[THREEPIDS]
    if not threepids.changes_enabled:
        raise MatrixError(400, "M_FORBIDDEN", "3PID changes are disabled on this server")
    sid, client_secret = _session_fields(body)
    uia = request.config_dict[UIA]
    result = await uia.authenticate(
        optional_dict(body, "auth"),
        [[PASSWORD]],
        uri="/account/3pid/add",
        method="POST",
        user_id=requester.user_id,
        token_id=requester.token_id,
    )
    session = await threepids.validated(ADD, sid, client_secret)
    await threepids.consume(session)
    await threepids.add_to_user(requester.user_id, session)
    await uia.finish(result)
    return json_response({})


async def post_threepid_delete(request: web.Request) -> web.Response:
    """POST /account/3pid/delete: forget the address here and at the identity
    server(s) holding a binding ("no-support" when none could, or none is known)."""
    requester = await get_requester(request)
    body = await read_json_body(request)
    medium = require_str(body, "medium", max_len=32)
    address = require_str(body, "address", max_len=512)
    raw_server = optional_str(body, "id_server", max_len=255)
    threepids = request.config_dict[THREEPIDS]
    if not threepids.changes_enabled:
        raise MatrixError(400, "M_FORBIDDEN", "3PID changes are disabled on this server")
    if await threepids.remove(requester.user_id, medium, address) and medium == "email":
        await delete_email_pushers(
            request.config_dict[PUSH_STORE], requester.user_id, canonical_email(address)
        )
    return await _unbind(request, requester.user_id, medium, address, raw_server)


async def post_threepid_unbind(request: web.Request) -> web.Response:
    """POST /account/3pid/unbind: only the identity server(s) forget it."""
    requester = await get_requester(request)
    body = await read_json_body(request)
    medium = require_str(body, "medium", max_len=32)
    address = require_str(body, "address", max_len=512)
    raw_server = optional_str(body, "id_server", max_len=255)
    return await _unbind(request, requester.user_id, medium, address, raw_server)


async def _unbind(
    request: web.Request, user_id: str, medium: str, address: str, raw_server: str | None
) -> web.Response:
    id_server = None if raw_server is None else id_server_param(raw_server)
    done = await request.config_dict[IDENTITY_BINDS].unbind(user_id, medium, address, id_server)
    return json_response({"id_server_unbind_result": "success" if done else "no-support"})


async def reset_password_by_email(request: web.Request, body: dict[str, Any]) -> web.Response:
    """POST /account/password without an access token: the user forgot their password
    and proves they read the reset mail (UIA stage m.login.email.identity)."""
    new_password = new_password_field(request, body)
    logout_devices = optional_bool(body, "logout_devices", default=True)
    limiters = request.config_dict[RATE_LIMITERS]
    ip = client_ip(request)
    uia = request.config_dict[UIA]
    result = await uia.authenticate(
        optional_dict(body, "auth"),
        [[EMAIL_IDENTITY]],
        uri="/account/password",
        method="POST",
        before_new_session=lambda: limiters.check("registration_sessions", ip),
    )
    threepids = request.config_dict[THREEPIDS]
    session = await threepids.validated(
        PASSWORD_RESET, result.data["threepid_sid"], result.data["threepid_client_secret"]
    )
    user_id = await threepids.owner(session.medium, session.address)
    if user_id is None:
        raise MatrixError(400, "M_THREEPID_NOT_FOUND", "Email not found")
    await threepids.consume(session)
    await request.config_dict[ACCOUNT_LIFECYCLE].change_password(
        user_id, new_password, logout_devices=logout_devices, keep_device=None
    )
    await uia.finish(result)
    return json_response({})


def wants_email_reset(request: web.Request) -> bool:
    """POST /account/password is a reset by email when no access token comes with it
    and this server mails."""
    return extract_access_token(request) is None and request.config_dict[THREEPIDS].email_enabled


# -- the page the mailed link opens -----------------------------------------------------

_ASK = {
    ADD: "Add {address} to your account?",
    REGISTRATION: "Register with {address}?",
    PASSWORD_RESET: "Reset the password of the account of {address}?",
}
_DONE = {
    ADD: "Your email address is confirmed. Return to your client and continue.",
    REGISTRATION: "Your email address is confirmed. Return to your client and continue.",
    PASSWORD_RESET: "Confirmed. Return to your client to choose the new password.",
}


def _bad_link() -> web.Response:
    return page(
        "Link not valid",
        "<p>This link has expired or is not valid. Ask your client to send a new one.</p>",
        400,
    )


_PURPOSE_OF_SEGMENT = {segment: purpose for purpose, segment in LINK_SEGMENTS.items()}


def _link_purpose(request: web.Request) -> str:
    purpose = _PURPOSE_OF_SEGMENT.get(request.match_info["purpose"])
    if purpose is None:
        raise MatrixError(404, "M_UNRECOGNIZED", "Unrecognized request")
    return purpose


def _link_fields(values: Any) -> tuple[str, str, str] | None:
    fields = tuple(values.get(k) for k in ("sid", "client_secret", "token"))
    if not all(isinstance(v, str) and 0 < len(v) <= MAX_SECRET_INPUT for v in fields):
        return None
    return fields  # type: ignore[return-value]


async def get_submit_token(request: web.Request) -> web.Response:
    """The mailed link: show what confirming does and a button; validates nothing."""
    purpose = _link_purpose(request)
    fields = _link_fields(request.query)
    threepids = request.config_dict[THREEPIDS]
    session = None if fields is None else await threepids.session_for_link(*fields)
    if session is None or session.purpose != purpose:
        return _bad_link()
    hidden = "".join(
        f'<input type="hidden" name="{k}" value="{escape(v)}">'
        for k, v in zip(("sid", "client_secret", "token"), fields or (), strict=True)
    )
    question = escape(_ASK[purpose].format(address=session.address))
    body = (
        f'<p>{question}</p><form method="post">{hidden}'
        '<button type="submit">Confirm</button></form>'
        "<p>If you did not ask for this, close this page: nothing changes.</p>"
    )
    return page("Confirm your email address", body)


async def post_submit_token(request: web.Request) -> web.Response:
    """The confirm button (a form post), or a client posting the token as JSON."""
    purpose = _link_purpose(request)
    threepids = request.config_dict[THREEPIDS]
    if request.content_type == "application/json":
        body = await read_json_body(request)
        fields = _link_fields(body)
        session = None if fields is None else await threepids.confirm_link(*fields)
        if session is None or session.purpose != purpose:
            return json_response({"success": False})
        return json_response({"success": True})
    if request.content_length is not None and request.content_length > 4096:
        return _bad_link()
    form = await request.post()
    fields = _link_fields(form)
    session = None if fields is None else await threepids.confirm_link(*fields)
    if session is None or session.purpose != purpose:
        return _bad_link()
    next_link = threepids.next_link_with_sid(session)
    if next_link is not None:
        raise web.HTTPFound(next_link, headers=PAGE_HEADERS)
    return page("Email address confirmed", f"<p>{escape(_DONE[purpose])}</p>")


def add_routes(app: web.Application) -> None:
    add_route(app, "POST", "/account/3pid/email/requestToken", post_add_request_token)
    add_route(app, "POST", "/register/email/requestToken", post_register_request_token)
    add_route(app, "POST", "/account/password/email/requestToken", post_password_request_token)
    for path in ("/account/3pid", "/register", "/account/password"):
        add_route(app, "POST", f"{path}/msisdn/requestToken", threepid_denied)
    add_route(app, "GET", "/account/3pid", get_threepids)
    add_route(app, "POST", "/account/3pid/add", post_threepid_add)
    add_route(app, "POST", "/account/3pid", _deprecated_add)
    add_route(app, "POST", "/account/3pid/delete", post_threepid_delete)
    add_route(app, "POST", "/account/3pid/unbind", post_threepid_unbind)
    page = "/unstable/{purpose}/email/submit_token"
    add_route(app, "GET", page, get_submit_token, prefixes=("",))
    add_route(app, "POST", page, post_submit_token, prefixes=("",))


async def _deprecated_add(request: web.Request) -> web.Response:
    """POST /account/3pid (removed from the spec in v1.1, with an identity server's
    threepid_creds): refused, as Synapse does."""
    await get_requester(request)
    return await threepid_denied(request)
