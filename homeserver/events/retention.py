"""The `m.room.retention` event (MSC1763): what its content may say, and what it means.

Content: `max_lifetime` and `min_lifetime`, both optional integers of milliseconds, the
minimum not above the maximum. Locally sent events are checked (as Synapse does, whether
or not retention is enabled: a room's policy must be readable by every server); an event
from elsewhere whose values are not integers is treated as no policy (the server's
default applies), again as in Synapse.
"""

from __future__ import annotations

from typing import Any

from homeserver.errors import MatrixError, bad_json

RETENTION_TYPE = "m.room.retention"


def check_retention_event(content: dict[str, Any], state_key: str | None) -> None:
    """Refuse (400) a locally sent m.room.retention event Synapse would refuse. Values
    outside the server's allowed_lifetime range are accepted (they are clamped)."""
    if state_key is None:
        raise MatrixError(400, "M_UNKNOWN", "m.room.retention must be a state event")
    for key in ("min_lifetime", "max_lifetime"):
        value = content.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise bad_json(f"'{key}' must be an integer")
    low, high = content.get("min_lifetime"), content.get("max_lifetime")
    if low is not None and high is not None and low > high:
        raise bad_json("'min_lifetime' can't be greater than 'max_lifetime'")


def room_lifetimes(content: dict[str, Any]) -> tuple[int | None, int | None] | None:
    """(min_lifetime, max_lifetime) of a retention event's content (None for an absent
    value); None when the event states no policy (neither key, or a non-integer)."""
    if "min_lifetime" not in content and "max_lifetime" not in content:
        return None
    for key in ("min_lifetime", "max_lifetime"):
        value = content.get(key)
        if key in content and (isinstance(value, bool) or not isinstance(value, int)):
            return None  # a present key must hold an integer (null too is no policy)
    return content.get("min_lifetime"), content.get("max_lifetime")
