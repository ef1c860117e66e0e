"""Who is making a client request: access token lookup at the edge.

Tokens come from `Authorization: Bearer` or, as the spec still allows, the
`access_token` query parameter. Junk (non-ASCII, control characters, oversize) is an
unknown token, never an exception.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from homeserver.accounts.mau import RESOURCE_LIMITS
from homeserver.appstate import APP_SERVICES, MODERATION, STORES
from homeserver.client.guests import guest_may_call
from homeserver.errors import MatrixError, forbidden, missing_token, unknown_token
from homeserver.http import REQUESTER_KEY, TOKEN_INFO_KEY
from homeserver.moderation import locked_error

MAX_TOKEN_LENGTH = 512


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Requester:
    user_id: str
    device_id: str | None
    access_token: str
    token_id: int
    is_guest: bool = False
    app_service_id: str | None = None  # authenticated with this appservice's as_token


def massaged_ts(request: web.Request, requester: Requester) -> int | None:
    """An appservice's `?ts=` (application service API, "Timestamp massaging"): the
    origin_server_ts of the event it sends, e.g. a bridged message's original time.
    Ignored for everyone else; 400 when not a non-negative integer."""
    raw = request.query.get("ts")
    if raw is None or requester.app_service_id is None:
        return None
    if not raw.isdigit() or len(raw) > 15:
        raise MatrixError(400, "M_INVALID_PARAM", "ts must be a timestamp in milliseconds")
    return int(raw)


def extract_access_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    query_token = request.query.get("access_token")
    token: str | None = None
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise missing_token("Invalid Authorization header: expected 'Bearer <token>'")
        token = value.strip()
        if query_token is not None and query_token != token:
            raise MatrixError(
                400, "M_MISSING_TOKEN", "Access token given in both header and query string"
            )
    elif query_token is not None:
        token = query_token
    return token


def _plausible(token: str) -> bool:
    """Printable ASCII without spaces (checked in C: this runs on every request)."""
    return (
        0 < len(token) <= MAX_TOKEN_LENGTH
        and token.isascii()
        and token.isprintable()
        and " " not in token
    )


async def get_requester(
    request: web.Request, *, allow_guest: bool = False, allow_locked: bool = False
) -> Requester:
    """The authenticated user of `request`, or a 401 Matrix error.

    Locked accounts get 401 M_USER_LOCKED unless `allow_locked` (logging out).
    The user ID is also noted on the request for the request log."""
    token = extract_access_token(request)
    if token is None:
        raise missing_token()
    if not _plausible(token):
        raise unknown_token()
    services = request.config_dict.get(APP_SERVICES)
    if services:
        service = services.by_token(token)
        if service is not None:
            return await _app_service_requester(request, service, token)
    info = await request.config_dict[STORES].accounts.get_token(token)
    if info is None:
        raise unknown_token()
    if info.valid_until_ms is not None and info.valid_until_ms < _now_ms():
        raise unknown_token("Access token has expired", soft_logout=True)
    request[REQUESTER_KEY] = info.user_id
    request[TOKEN_INFO_KEY] = info
    if not allow_locked and request.config_dict[MODERATION].is_locked(info.user_id):
        raise locked_error()
    if info.is_guest and not allow_guest and not guest_may_call(request.method, request.path):
        raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access not allowed")
    limits = request.config_dict.get(RESOURCE_LIMITS)
    if limits is not None:  # monthly active users (a dict lookup once counted)
        await limits.record(info.user_id)
    return Requester(
        user_id=info.user_id,
        device_id=info.device_id,
        access_token=token,
        token_id=info.token_id,
        is_guest=info.is_guest,
    )


async def _app_service_requester(request: web.Request, service: Any, token: str) -> Requester:
    """An appservice acting as its sender, or (`?user_id=`) as a user of its namespace
    that exists, on one of that user's devices (`?device_id=`, MSC3202/MSC4326)."""
    user_id = request.query.get("user_id") or service.sender
    if user_id != service.sender and not service.is_user_in_namespace(user_id):
        raise MatrixError(403, "M_EXCLUSIVE", "Application service cannot masquerade as this user")
    accounts = request.config_dict[STORES].accounts
    if await accounts.get_user(user_id) is None:
        raise forbidden("Application service has not registered this user")
    device_id = request.query.get("device_id") or request.query.get("org.matrix.msc3202.device_id")
    if device_id is not None and await accounts.get_device(user_id, device_id) is None:
        raise MatrixError(400, "M_UNKNOWN_DEVICE", "No such device for this user")
    request[REQUESTER_KEY] = user_id
    return Requester(
        user_id=user_id,
        device_id=device_id,
        access_token=token,
        token_id=0,
        app_service_id=service.id,
    )


async def get_optional_requester(request: web.Request) -> Requester | None:
    if extract_access_token(request) is None:
        return None
    return await get_requester(request)
