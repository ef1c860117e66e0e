"""Reading power levels the way the authorisation rules do.

The auth rules, the client API (who may do what) and state resolution (ordering by the
sender's power) all need the same answers: a user's level, the level an event type
requires, and the invite/kick/ban/redact thresholds. They live here, once, with the
per-version quirks of how a power level value may be written:

* v1-5: integers, integer strings (`" +050 "`) or floats (truncated towards zero);
* v6-9: integers or integer strings (strict canonical JSON forbids floats);
* v10+: integers only.

Reading is lenient (a value we cannot parse falls back to the default, as an already
accepted event must still be usable); *validating* a new power levels event is strict and
lives in `auth_rules`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from ..events.event import Event
from ..events.room_versions import RoomVersion

# Defaults from the m.room.power_levels schema and the server-server "Definitions".
DEFAULT_USERS_DEFAULT = 0
DEFAULT_EVENTS_DEFAULT = 0
# The spec says state_default is 0 when a room has no power levels event at all; Synapse
# uses 50 there too (so only a creator, at 100, may send state, the first power levels
# event included). Auth rules decide room state, so we follow Synapse: a server that
# accepted what Synapse rejects would fork the room.
DEFAULT_STATE_DEFAULT = 50
DEFAULT_INVITE = 0
DEFAULT_KICK = 50
DEFAULT_BAN = 50
DEFAULT_REDACT = 50
# v1-11 rooms without a power levels event: the creator acts as if at 100.
CREATOR_LEVEL_WITHOUT_POWER_LEVELS = 100

# The top-level integer properties whose changes rule "power levels 5" inspects.
LEVEL_KEYS = ("users_default", "events_default", "state_default", "ban", "redact", "kick", "invite")

# "a single base 10 integer ... optionally prefixed with - or + ... optionally with any
# number of leading or trailing whitespace characters" (v1-9 stringy power levels).
_INTEGER_STRING = re.compile(r"\s*[+-]?[0-9]+\s*")

PowerLevel = int | float  # float only for math.inf (v12 room creators)


def parse_power_level(value: Any, room_version: RoomVersion) -> int | None:
    """Interpret one power level value under `room_version`, or None if it is invalid."""
    if isinstance(value, bool):
        # JSON true/false are not integers, in any version.
        return None
    if isinstance(value, int):
        return value
    if room_version.integer_power_levels:
        return None
    if isinstance(value, str):
        if not _INTEGER_STRING.fullmatch(value):
            return None
        return int(value.strip())
    if isinstance(value, float) and not room_version.strict_canonical_json:
        if not math.isfinite(value):
            return None
        return int(value)  # truncates towards zero: 51146.98 -> 51146
    return None


def is_valid_power_level(value: Any, room_version: RoomVersion) -> bool:
    return parse_power_level(value, room_version) is not None


def room_creators(create_event: Event | None) -> frozenset[str]:
    """The room's creators: who gets the creator privileges of this room version.

    v1-10 name one creator in `content.creator`; v11 uses the create event's sender;
    v12 adds `content.additional_creators`.
    """
    if create_event is None:
        return frozenset()
    rv = create_event.room_version
    if not rv.implicit_room_creator:
        creator = create_event.content.get("creator")
        return frozenset([creator]) if isinstance(creator, str) else frozenset()
    creators = {create_event.sender}
    if rv.privileged_creators:
        extra = create_event.content.get("additional_creators")
        if isinstance(extra, list):
            creators.update(u for u in extra if isinstance(u, str))
    return frozenset(creators)


class PowerLevels:
    """The effective power levels of a room: a PL event's content plus the defaults.

    Built from the current m.room.power_levels event (or None) and the create event,
    so creators' privileges (100 without a PL event; infinite in v12) are applied.
    """

    __slots__ = ("_content", "_room_version", "_has_event", "_creators", "_privileged")

    def __init__(self, power_levels_event: Event | None, create_event: Event | None) -> None:
        self._has_event = power_levels_event is not None
        self._content: Mapping[str, Any] = {}
        self._room_version: RoomVersion | None = None
        if power_levels_event is not None:
            self._content = power_levels_event.content
            self._room_version = power_levels_event.room_version
        self._creators = room_creators(create_event)
        self._privileged = (
            create_event is not None and create_event.room_version.privileged_creators
        )

    def _int(self, value: Any, default: int) -> int:
        if value is None or self._room_version is None:
            return default
        parsed = parse_power_level(value, self._room_version)
        return default if parsed is None else parsed

    def _level(self, key: str, default: int) -> int:
        return self._int(self._content.get(key), default)

    @property
    def users_default(self) -> int:
        return self._level("users_default", DEFAULT_USERS_DEFAULT)

    @property
    def events_default(self) -> int:
        return self._level("events_default", DEFAULT_EVENTS_DEFAULT)

    @property
    def state_default(self) -> int:
        return self._level("state_default", DEFAULT_STATE_DEFAULT)

    @property
    def invite(self) -> int:
        return self._level("invite", DEFAULT_INVITE)

    @property
    def kick(self) -> int:
        return self._level("kick", DEFAULT_KICK)

    @property
    def ban(self) -> int:
        return self._level("ban", DEFAULT_BAN)

    @property
    def redact(self) -> int:
        return self._level("redact", DEFAULT_REDACT)

    def user_level(self, user_id: str) -> PowerLevel:
        """A user's power level; v12 creators are infinitely powerful."""
        if self._privileged and user_id in self._creators:
            return math.inf
        if not self._has_event:
            return CREATOR_LEVEL_WITHOUT_POWER_LEVELS if user_id in self._creators else 0
        users = self._content.get("users")
        if isinstance(users, Mapping) and user_id in users:
            return self._int(users[user_id], self.users_default)
        return self.users_default

    def event_level(self, event_type: str, is_state: bool) -> int:
        """The *required power level* to send an event of this type."""
        default = self.state_default if is_state else self.events_default
        events = self._content.get("events")
        if isinstance(events, Mapping) and event_type in events:
            return self._int(events[event_type], default)
        return default

    def notification_level(self, key: str, default: int = 50) -> int:
        """`notifications.<key>` (e.g. `room`): the level to trigger that notification."""
        notifications = self._content.get("notifications")
        if isinstance(notifications, Mapping) and key in notifications:
            return self._int(notifications[key], default)
        return default


def get_power_level(
    user_id: str, power_levels_event: Event | None, create_event: Event | None
) -> PowerLevel:
    """A user's power level given the room's PL and create events.

    v12 creators get `math.inf`; in v1-11 rooms without a power levels event the creator
    gets 100 and everybody else 0.
    """
    return PowerLevels(power_levels_event, create_event).user_level(user_id)


def get_required_level(
    event_type: str,
    is_state: bool,
    power_levels_event: Event | None,
    create_event: Event | None,
) -> int:
    """The level needed to send `event_type` (state or not) in this room."""
    return PowerLevels(power_levels_event, create_event).event_level(event_type, is_state)


__all__ = [
    "LEVEL_KEYS",
    "PowerLevel",
    "PowerLevels",
    "get_power_level",
    "get_required_level",
    "is_valid_power_level",
    "parse_power_level",
    "room_creators",
]
