"""Sync filters (spec: filter.yaml, sync_filter.yaml): validation and matching.

`parse_filter` checks a filter definition's shape (400 M_BAD_JSON on wrong types, so a
saved filter can always be applied later) and returns a `SyncFilter`. Type and sender
patterns allow `*` wildcards; the `not_*` lists win over the allow lists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from homeserver.errors import MatrixError

DEFAULT_TIMELINE_LIMIT = 10
MAX_TIMELINE_LIMIT = 1000
_LIST_FIELDS = ("types", "not_types", "senders", "not_senders", "rooms", "not_rooms")
_EVENT_FILTER_KEYS = {"limit", "types", "not_types", "senders", "not_senders"}
_ROOM_EVENT_FILTER_KEYS = _EVENT_FILTER_KEYS | {
    "rooms",
    "not_rooms",
    "lazy_load_members",
    "include_redundant_members",
    "contains_url",
    "unread_thread_notifications",
}


def _bad(message: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", message)


def _compile(patterns: list[str] | None) -> re.Pattern[str] | None:
    if patterns is None:
        return None
    if not patterns:
        return re.compile(r"(?!)")  # matches nothing
    return re.compile("|".join(re.escape(p).replace(r"\*", ".*") for p in patterns), re.DOTALL)


@dataclass(frozen=True)
class EventFilter:
    """An EventFilter or RoomEventFilter."""

    limit: int | None = None
    types: re.Pattern[str] | None = None
    not_types: re.Pattern[str] | None = None
    senders: frozenset[str] | None = None
    not_senders: frozenset[str] = frozenset()
    rooms: frozenset[str] | None = None
    not_rooms: frozenset[str] = frozenset()
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    contains_url: bool | None = None
    # Room timeline filters only: split unread counts per thread in /sync.
    unread_thread_notifications: bool = False

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    def allows_type(self, event_type: str) -> bool:
        if self.not_types is not None and self.not_types.fullmatch(event_type):
            return False
        return self.types is None or bool(self.types.fullmatch(event_type))

    def allows(self, event_type: str, sender: str | None, content: Any = None) -> bool:
        if not self.allows_type(event_type):
            return False
        if sender is not None:
            if sender in self.not_senders:
                return False
            if self.senders is not None and sender not in self.senders:
                return False
        if self.contains_url is not None:
            has_url = isinstance(content, dict) and isinstance(content.get("url"), str)
            if has_url != self.contains_url:
                return False
        return True

    @property
    def filters_events(self) -> bool:
        """Whether some events of a room may be left out (by type, sender or URL)."""
        return (
            self.types is not None
            or self.not_types is not None
            or self.senders is not None
            or bool(self.not_senders)
            or self.contains_url is not None
        )

    @property
    def allows_nothing(self) -> bool:
        return self.limit == 0 or (self.types is not None and self.types.pattern == r"(?!)")


@dataclass(frozen=True)
class SyncFilter:
    presence: EventFilter = EventFilter()
    account_data: EventFilter = EventFilter()
    rooms: frozenset[str] | None = None
    not_rooms: frozenset[str] = frozenset()
    include_leave: bool = False
    timeline: EventFilter = EventFilter()
    state: EventFilter = EventFilter()
    ephemeral: EventFilter = EventFilter()
    room_account_data: EventFilter = EventFilter()
    event_fields: tuple[tuple[str, ...], ...] | None = None
    event_format: str = "client"

    @property
    def timeline_limit(self) -> int:
        limit = self.timeline.limit
        return DEFAULT_TIMELINE_LIMIT if limit is None else limit

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms


_ID_SIGILS = {"rooms": "!", "not_rooms": "!", "senders": "@", "not_senders": "@"}
_ID_KINDS = {"!": "room", "@": "user"}


def _str_list(obj: dict[str, Any], key: str, where: str) -> list[str] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(f"{where}.{key} must be a list of strings")
    if len(value) > 1000 or any(len(v) > 1000 for v in value):
        raise _bad(f"{where}.{key} is too long")
    # Room and user lists must hold IDs (Synapse's filter schema: "^!" and "^@").
    sigil = _ID_SIGILS.get(key)
    if sigil is not None and not all(v.startswith(sigil) for v in value):
        raise _bad(f"{where}.{key} must be a list of {_ID_KINDS[sigil]} IDs")
    return value


def _bool(obj: dict[str, Any], key: str, where: str, default: bool = False) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise _bad(f"{where}.{key} must be a boolean")
    return value


def _event_filter(obj: Any, where: str, room_fields: bool) -> EventFilter:
    if obj is None:
        return EventFilter()
    if not isinstance(obj, dict):
        raise _bad(f"{where} must be an object")
    limit = obj.get("limit")
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise _bad(f"{where}.limit must be a non-negative integer")
        limit = min(limit, MAX_TIMELINE_LIMIT)
    lists = {k: _str_list(obj, k, where) for k in _LIST_FIELDS}
    contains_url = obj.get("contains_url")
    if contains_url is not None and not isinstance(contains_url, bool):
        raise _bad(f"{where}.contains_url must be a boolean")
    for key in ("lazy_load_members", "include_redundant_members", "unread_thread_notifications"):
        _bool(obj, key, where)
    return EventFilter(
        limit=limit,
        types=_compile(lists["types"]),
        not_types=_compile(lists["not_types"]) if lists["not_types"] else None,
        senders=None if lists["senders"] is None else frozenset(lists["senders"]),
        not_senders=frozenset(lists["not_senders"] or ()),
        rooms=None if lists["rooms"] is None or not room_fields else frozenset(lists["rooms"]),
        not_rooms=frozenset(lists["not_rooms"] or ()) if room_fields else frozenset(),
        lazy_load_members=room_fields and _bool(obj, "lazy_load_members", where),
        include_redundant_members=room_fields and _bool(obj, "include_redundant_members", where),
        contains_url=contains_url if room_fields else None,
        unread_thread_notifications=room_fields
        and _bool(obj, "unread_thread_notifications", where),
    )


def _field_path(field: str) -> tuple[str, ...]:
    """Split an event_fields entry on unescaped dots (`\\.` is a literal dot)."""
    parts: list[str] = []
    current = ""
    i = 0
    while i < len(field):
        c = field[i]
        if c == "\\" and i + 1 < len(field):
            current += field[i + 1]
            i += 2
            continue
        if c == ".":
            parts.append(current)
            current = ""
        else:
            current += c
        i += 1
    parts.append(current)
    return tuple(parts)


def parse_filter(definition: Any) -> SyncFilter:
    """Validate a filter definition (a JSON object) and build the matcher."""
    if not isinstance(definition, dict):
        raise _bad("Filter must be a JSON object")
    room = definition.get("room")
    room = {} if room is None else room
    if not isinstance(room, dict):
        raise _bad("room must be an object")
    fields = _str_list(definition, "event_fields", "filter")
    event_format = definition.get("event_format", "client")
    if event_format not in ("client", "federation"):
        raise _bad("event_format must be 'client' or 'federation'")
    rooms = _str_list(room, "rooms", "room")
    return SyncFilter(
        presence=_event_filter(definition.get("presence"), "presence", False),
        account_data=_event_filter(definition.get("account_data"), "account_data", False),
        rooms=None if rooms is None else frozenset(rooms),
        not_rooms=frozenset(_str_list(room, "not_rooms", "room") or ()),
        include_leave=_bool(room, "include_leave", "room"),
        timeline=_event_filter(room.get("timeline"), "room.timeline", True),
        state=_event_filter(room.get("state"), "room.state", True),
        ephemeral=_event_filter(room.get("ephemeral"), "room.ephemeral", True),
        room_account_data=_event_filter(room.get("account_data"), "room.account_data", True),
        event_fields=None if fields is None else tuple(_field_path(f) for f in fields),
        event_format=event_format,
    )


def apply_event_fields(event: dict[str, Any], paths: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    """Keep only the listed (dotted) fields of a formatted event."""
    out: dict[str, Any] = {}
    for path in paths:
        src: Any = event
        for key in path:
            if not isinstance(src, dict) or key not in src:
                break
            src = src[key]
        else:
            dst = out
            for key in path[:-1]:
                dst = dst.setdefault(key, {})
                if not isinstance(dst, dict):
                    break
            else:
                dst[path[-1]] = src
    return out
