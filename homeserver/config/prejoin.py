"""Synapse's `room_prejoin_state`: which of a room's state an invitee or knocker is
shown before joining (name, avatar, topic... by default). `additional_event_types`
adds types (a string: every state key of it; a [type, state key] pair: that one);
`disable_default_event_types: true` keeps only those. The create event is always
shown (the spec requires it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeserver.config.reader import Reader, describe

DEFAULT_TYPES = (
    "m.room.create",
    "m.room.join_rules",
    "m.room.canonical_alias",
    "m.room.avatar",
    "m.room.name",
    "m.room.encryption",
    "m.room.topic",
)
MAX_TYPES = 100
PrejoinState = tuple[tuple[str, str | None], ...]


def read_prejoin_state(r: Reader, top: Mapping[str, Any]) -> PrejoinState | None:
    section = r.mapping(top.get("room_prejoin_state"), "room_prejoin_state")
    if section is None:
        return None
    r.check_keys(
        section, {"disable_default_event_types", "additional_event_types"}, "room_prejoin_state"
    )
    where = "room_prejoin_state.additional_event_types"
    extra = section.get("additional_event_types") or []
    if not isinstance(extra, list) or len(extra) > MAX_TYPES:
        r.problem(where, f"expected a list of at most {MAX_TYPES} event types")
        extra = []
    chosen: list[tuple[str, str | None]] = []
    if not r.bool(section, "disable_default_event_types", "room_prejoin_state", False):
        chosen += [(t, "") for t in DEFAULT_TYPES]
    for i, item in enumerate(extra):
        if isinstance(item, str) and item:
            chosen.append((item, None))
        elif (
            isinstance(item, list)
            and len(item) == 2
            and all(isinstance(x, str) for x in item)
            and item[0]
        ):
            chosen.append((item[0], item[1]))
        else:
            r.problem(
                f"{where}[{i}]", f"expected a type or [type, state key], got {describe(item)}"
            )
    return tuple(dict.fromkeys(chosen))
