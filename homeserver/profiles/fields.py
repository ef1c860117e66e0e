"""Profile field rules (v1.16 extended profiles): key grammar, value types, size limits.

Pure functions raising spec errors, so the service and the handlers share one
definition of what a valid profile is.
"""

from __future__ import annotations

import json
import re
from typing import Any

from homeserver.errors import MatrixError, bad_json, invalid_param

DISPLAYNAME = "displayname"
AVATAR_URL = "avatar_url"
TIMEZONE = "m.tz"
# Fields mirrored into m.room.member events of every room the user is joined to.
MEMBER_FIELDS = (DISPLAYNAME, AVATAR_URL)

MAX_KEY_BYTES = 255
MAX_PROFILE_BYTES = 64 * 1024
MAX_DISPLAYNAME_LEN = 256  # Synapse's limit
MAX_AVATAR_URL_LEN = 1000  # Synapse's limit

_KEY_GRAMMAR = re.compile(r"^(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$")


def check_key(key: str) -> str:
    """A profile key as the spec's pattern allows; 400 M_KEY_TOO_LARGE / M_INVALID_PARAM."""
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise MatrixError(400, "M_KEY_TOO_LARGE", f"Profile key longer than {MAX_KEY_BYTES} bytes")
    if not _KEY_GRAMMAR.match(key):
        raise invalid_param(f"Invalid profile key: {key[:64]!r}")
    return key


def check_value(key: str, value: Any) -> Any:
    """Validate a new value for `key`. For displayname/avatar_url, "" means unset (None)."""
    if key in (DISPLAYNAME, AVATAR_URL, TIMEZONE):
        if not isinstance(value, str):
            raise bad_json(f"'{key}' must be a string")
        limit = {DISPLAYNAME: MAX_DISPLAYNAME_LEN, AVATAR_URL: MAX_AVATAR_URL_LEN}.get(key)
        if limit is not None and len(value) > limit:
            raise invalid_param(f"'{key}' is longer than {limit} characters")
        if key == AVATAR_URL and value and not value.startswith("mxc://"):
            raise invalid_param("'avatar_url' must be an mxc:// URI")
        if key in MEMBER_FIELDS and value == "":
            return None
        return value
    if value is None:
        raise bad_json(f"'{key}' must not be null; use DELETE to remove a field")
    return value


def profile_size(fields: dict[str, Any]) -> int:
    """Bytes of the profile as compact JSON: what the 64 KiB limit counts."""
    return len(json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def check_profile_size(fields: dict[str, Any]) -> None:
    if profile_size(fields) > MAX_PROFILE_BYTES:
        raise MatrixError(
            400, "M_PROFILE_TOO_LARGE", f"The profile would exceed {MAX_PROFILE_BYTES} bytes"
        )
