"""Small helpers the account-area handlers share: routing under /v3 and /r0, the
client's address for rate limits, the device_id field, a new password, and the 3PID
refusal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from homeserver.accounts.passwords import MAX_PASSWORD_LENGTH, check_password_policy
from homeserver.appstate import CONFIG
from homeserver.client.validate import optional_str, require_str
from homeserver.errors import MatrixError, bad_json
from homeserver.http import Handler

DEFAULT_PREFIXES = ("/v3", "/r0")
MAX_DEVICE_ID_LENGTH = 255


def add_route(
    app: web.Application,
    method: str,
    path: str,
    handler: Handler,
    *,
    prefixes: Sequence[str] = DEFAULT_PREFIXES,
) -> None:
    """Serve `path` under each version prefix (the client sub-app adds /_matrix/client)."""
    for prefix in prefixes:
        app.router.add_route(method, prefix + path, handler)


def client_ip(request: web.Request) -> str:
    return request.remote or "unknown"


def device_id_field(body: dict[str, Any], key: str = "device_id") -> str | None:
    """A client-chosen device ID: printable ASCII without spaces, at most 255 chars."""
    value = optional_str(body, key, max_len=MAX_DEVICE_ID_LENGTH)
    if value is not None and (not value or any(not 0x21 <= ord(c) <= 0x7E for c in value)):
        raise bad_json(f"'{key}' must be printable ASCII without spaces")
    return value


def new_password_field(request: web.Request, body: dict[str, Any]) -> str:
    """`new_password`, where passwords are on (password_config) and it meets the
    policy."""
    passwords = request.config_dict[CONFIG].passwords
    if not passwords.enabled:
        raise MatrixError(403, "M_FORBIDDEN", "Password change disabled")
    new_password = require_str(body, "new_password", max_len=MAX_PASSWORD_LENGTH)
    check_password_policy(passwords.policy, new_password)
    return new_password


async def threepid_denied(request: web.Request) -> web.Response:
    """Third-party identifiers (email, phone) are not supported by this server."""
    raise MatrixError(
        403, "M_THREEPID_DENIED", "Third-party identifiers are not supported on this server"
    )
