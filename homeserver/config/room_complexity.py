"""Synapse's `limit_remote_rooms` section: how big a remote room a local user may join.

Joining a room over federation makes this server fetch, check, store and resolve the
room's whole state; a room with hundreds of thousands of state events costs a small
server more than it can hold, and that cost is set by strangers (whoever made the room
big), not by the user who clicked "join". With `enabled: true`, a remote join first
asks the room's servers for the room's complexity (its state events / 500, Synapse's
"v1" measure) and is refused above `complexity`, with `complexity_error` as the
message; when no server answers, the join goes ahead and the state we then hold is
measured instead (the user leaves again if it is too big). `admins_can_join: true`
lets server admins join regardless. Defaults are Synapse's: off, 1.0 (500 state
events), admins limited too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from homeserver.config.reader import Reader, describe

LIMIT_REMOTE_ROOMS_KEYS = ("limit_remote_rooms",)
_SECTION = "limit_remote_rooms"
_KEYS = frozenset({"enabled", "complexity", "complexity_error", "admins_can_join"})

DEFAULT_COMPLEXITY_ERROR = (
    "This homeserver cannot join rooms this large or complex. Ask your server "
    "administrator about joining it."
)


@dataclass(frozen=True)
class LimitRemoteRoomsConfig:
    """The limit on remote rooms' complexity (state events / 500) for local joins."""

    enabled: bool = False
    complexity: float = 1.0
    complexity_error: str = DEFAULT_COMPLEXITY_ERROR
    admins_can_join: bool = False


def read_limit_remote_rooms(r: Reader, top: Mapping[str, Any]) -> LimitRemoteRoomsConfig:
    """The section, checked: a typo or a non-number is a config error, not a limit that
    silently never applies."""
    section = r.mapping(top.get(_SECTION), _SECTION)
    if section is None:
        return LimitRemoteRoomsConfig()
    r.check_keys(section, _KEYS, _SECTION)
    default = LimitRemoteRoomsConfig()
    complexity = default.complexity
    raw = section.get("complexity")
    if raw is not None:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            r.problem(f"{_SECTION}.complexity", f"expected a number, got {describe(raw)}")
        elif not math.isfinite(raw) or raw < 0:
            r.problem(f"{_SECTION}.complexity", f"expected a number of 0 or more, got {raw}")
        else:
            complexity = float(raw)
    return LimitRemoteRoomsConfig(
        enabled=r.bool(section, "enabled", _SECTION, default.enabled),
        complexity=complexity,
        complexity_error=r.str(section, "complexity_error", _SECTION, default.complexity_error),
        admins_can_join=r.bool(section, "admins_can_join", _SECTION, default.admins_can_join),
    )
