"""What every admin endpoint shares: "is the caller a server admin?" and Synapse's
query parameter rules (integers, booleans, directions, identifiers).

Every handler starts with `require_admin`: no token is 401 M_MISSING_TOKEN, a bad
one 401 M_UNKNOWN_TOKEN, a user who is not a server admin 403 M_FORBIDDEN.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from homeserver.admin.paging import DEFAULT_LIMIT, MAX_LIMIT, Page
from homeserver.appstate import STORES
from homeserver.client.auth import Requester, get_requester
from homeserver.errors import MatrixError, forbidden, invalid_param, missing_param
from homeserver.http import path_param, query_param
from homeserver.ids import (
    validate_event_id,
    validate_room_alias,
    validate_room_id,
    validate_user_id,
)


async def require_admin(request: web.Request) -> Requester:
    requester = await get_requester(request)
    user = await request.config_dict[STORES].accounts.get_user(requester.user_id)
    if user is None or not user.is_admin:
        raise forbidden("You are not a server admin")
    return requester


def _non_negative(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise invalid_param(f"Query parameter {name} must be an integer") from None
    if number < 0:
        raise invalid_param(f"Query parameter {name} must be a positive integer")
    return number


def int_param(request: web.Request, name: str, default: int | None = None) -> int | None:
    value = query_param(request, name)
    return default if value is None else _non_negative(name, value)


def required_int(request: web.Request, name: str) -> int:
    value = query_param(request, name)
    if value is None:
        raise missing_param(f"Missing required integer query parameter {name}")
    return _non_negative(name, value)


def page_params(request: web.Request, default_limit: int = DEFAULT_LIMIT) -> Page:
    """`from` and `limit` (Synapse: non-negative integers; limit capped here)."""
    start = int_param(request, "from", 0) or 0
    limit = int_param(request, "limit", default_limit)
    return Page(start=start, limit=min(default_limit if limit is None else limit, MAX_LIMIT))


def bool_param(request: web.Request, name: str, default: bool | None = None) -> bool | None:
    value = query_param(request, name)
    if value is None:
        return default
    if value == "true":
        return True
    if value == "false":
        return False
    raise invalid_param(f"Boolean query parameter {name!r} must be one of ['true', 'false']")


def choice_param(
    request: web.Request, name: str, allowed: Iterable[str], default: str | None
) -> str | None:
    value = query_param(request, name)
    if value is None:
        return default
    allowed = list(allowed)
    if value not in allowed:
        raise invalid_param(f"Query parameter {name!r} must be one of {sorted(allowed)}")
    return value


def direction_param(request: web.Request, default: str = "f") -> str:
    return choice_param(request, "dir", ("f", "b"), default) or default


def str_param(request: web.Request, name: str, max_len: int = 1000) -> str | None:
    value = query_param(request, name)
    if value is not None and len(value) > max_len:
        raise invalid_param(f"Query parameter {name} is too long")
    return value


def user_id_path(request: web.Request, name: str = "user_id") -> str:
    return str(path_param(request, name, validate_user_id))


def room_id_path(request: web.Request, name: str = "room_id") -> str:
    return str(path_param(request, name, validate_room_id))


def room_id_or_alias_path(request: web.Request, name: str = "room_id") -> str:
    value: Any = path_param(request, name)
    if isinstance(value, str) and value.startswith("#"):
        return str(path_param(request, name, validate_room_alias))
    return room_id_path(request, name)


def event_id_path(request: web.Request, name: str = "event_id") -> str:
    return str(path_param(request, name, validate_event_id))


def report_id_path(request: web.Request) -> int:
    raw = str(path_param(request, "report_id"))
    if not raw.isdigit() or len(raw) > 18:
        raise MatrixError(
            400,
            "M_INVALID_PARAM",
            "The report_id parameter must be a string representing a positive integer.",
        )
    return int(raw)


def body_user_id(body: dict[str, Any], key: str = "user_id") -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise MatrixError(400, "M_MISSING_PARAM", f"Missing '{key}'")
    try:
        return str(validate_user_id(value))
    except ValueError as exc:
        raise invalid_param(f"Invalid {key}: {exc}") from None


def body_bool(body: dict[str, Any], key: str, default: bool | None = None) -> bool | None:
    value = body.get(key, default)
    if value is not None and not isinstance(value, bool):
        raise MatrixError(400, "M_BAD_JSON", f"Param '{key}' must be a boolean, if given")
    return value


def body_int(body: dict[str, Any], key: str, *, allow_null: bool = True) -> int | None:
    value = body.get(key)
    if value is None:
        if not allow_null and key in body:
            raise invalid_param(f"'{key}' must be an integer")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 2**53:
        raise invalid_param(f"'{key}' must be a non-negative integer or null")
    return value
