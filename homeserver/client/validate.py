"""Field validators for JSON request bodies: one call per field, spec errors on misuse.

A JSON `null` for an optional field reads as absent. Wrong types are 400 M_BAD_JSON,
missing required fields 400 M_MISSING_PARAM, over-long strings 400 M_INVALID_PARAM. Lone
surrogates never reach here (homeserver.http.read_json_body refuses them).
"""

from __future__ import annotations

from typing import Any

from homeserver.errors import bad_json, invalid_param, missing_param, too_large
from homeserver.events.canonical import (
    CanonicalJsonError,
    check_strict_json,
    encode_canonical_json,
)

DEFAULT_MAX_LEN = 65_536
# An event (PDU) may not exceed 65,536 bytes of canonical JSON; its content alone can't.
MAX_EVENT_CONTENT_BYTES = 65_536


def _check_len(key: str, value: str, max_len: int) -> str:
    if len(value) > max_len:
        raise invalid_param(f"'{key}' is longer than {max_len} characters")
    return value


def require_str(body: dict[str, Any], key: str, *, max_len: int = DEFAULT_MAX_LEN) -> str:
    if body.get(key) is None:
        raise missing_param(f"Missing '{key}'")
    return optional_str(body, key, max_len=max_len)  # type: ignore[return-value]


def optional_str(
    body: dict[str, Any], key: str, *, max_len: int = DEFAULT_MAX_LEN, default: str | None = None
) -> str | None:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise bad_json(f"'{key}' must be a string")
    return _check_len(key, value, max_len)


def optional_bool(body: dict[str, Any], key: str, *, default: bool = False) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_json(f"'{key}' must be a boolean")
    return value


def optional_int(body: dict[str, Any], key: str, *, default: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_json(f"'{key}' must be an integer")
    return value


def optional_dict(body: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_json(f"'{key}' must be an object")
    return value


def require_str_list(
    body: dict[str, Any], key: str, *, max_items: int = 1000, max_len: int = DEFAULT_MAX_LEN
) -> list[str]:
    value = body.get(key)
    if value is None:
        raise missing_param(f"Missing '{key}'")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_json(f"'{key}' must be a list of strings")
    if len(value) > max_items:
        raise invalid_param(f"'{key}' has more than {max_items} items")
    for item in value:
        _check_len(key, item, max_len)
    return value


def event_content(value: dict[str, Any], what: str = "content") -> dict[str, Any]:
    """Content a client wants in a room event, held to the canonical JSON number rules.

    Integers must lie within ±(2^53-1) and floats are refused: every room version since
    v6 requires this of signed events, and checking here (not when the event is built)
    turns a 2^64 in a state event into 400 M_BAD_JSON before anything is persisted.
    Content that alone exceeds the event size limit is 413 M_TOO_LARGE.
    """
    try:
        check_strict_json(value)
    except CanonicalJsonError as exc:
        raise bad_json(f"{what} is not valid canonical JSON: {exc}") from None
    size = len(encode_canonical_json(value))
    if size > MAX_EVENT_CONTENT_BYTES:
        raise too_large(f"{what} is {size} bytes; events are limited to 65536")
    return value
