"""Parsing a simplified sliding sync request body (MSC4186) into checked dataclasses.

Every field is type-checked and bounded (lists, ranges, required_state entries,
timeline limits), so a hostile body is a 400 M_INVALID_PARAM / M_BAD_JSON, never a
500 or an unbounded amount of work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from homeserver.errors import MatrixError

MAX_LISTS = 50
MAX_RANGES = 10
MAX_RANGE_END = 100_000
MAX_REQUIRED_STATE = 200
MAX_TIMELINE_LIMIT = 100
MAX_SUBSCRIPTIONS = 500
MAX_NAME = 200


def _bad(message: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", message)


def _obj(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(f"{what} must be an object")
    return value


def _str_list(value: Any, what: str, limit: int = 1000) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > limit:
        raise _bad(f"{what} must be a list of at most {limit} strings")
    if not all(isinstance(v, str) and len(v) <= 500 for v in value):
        raise _bad(f"{what} must be a list of strings")
    return tuple(value)


def _opt_bool(value: Any, what: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise _bad(f"{what} must be a boolean")
    return value


@dataclass(frozen=True)
class RoomConfig:
    required_state: tuple[tuple[str, str], ...] = ()
    timeline_limit: int = 0

    def merged(self, other: RoomConfig) -> RoomConfig:
        """Two configs asking for one room: everything either asks for."""
        state = tuple(dict.fromkeys((*self.required_state, *other.required_state)))
        return RoomConfig(state, max(self.timeline_limit, other.timeline_limit))

    @cached_property
    def key(self) -> str:
        """A short fingerprint of the required state: a room sent with other required
        state is sent again in full. (A larger timeline limit only expands the
        timeline: Synapse's `unstable_expanded_timeline`.)"""
        raw = json.dumps(sorted(self.required_state))
        return hashlib.blake2b(raw.encode(), digest_size=6).hexdigest()


def _room_config(body: dict[str, Any], what: str) -> RoomConfig:
    state = body.get("required_state", [])
    if not isinstance(state, list) or len(state) > MAX_REQUIRED_STATE:
        raise _bad(f"{what}.required_state must be a list of [type, state_key] pairs")
    pairs = []
    for item in state:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(x, str) and len(x) <= 500 for x in item)
        ):
            raise _bad(f"{what}.required_state entries must be [type, state_key] pairs")
        pairs.append((item[0], item[1]))
    limit = body.get("timeline_limit", 0)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise _bad(f"{what}.timeline_limit must be a non-negative integer")
    return RoomConfig(tuple(pairs), min(limit, MAX_TIMELINE_LIMIT))


@dataclass(frozen=True)
class ListFilters:
    is_dm: bool | None = None
    is_invite: bool | None = None
    is_encrypted: bool | None = None
    spaces: tuple[str, ...] | None = None
    room_types: tuple[str | None, ...] | None = None
    not_room_types: tuple[str | None, ...] | None = None


def _room_types(value: Any, what: str) -> tuple[str | None, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > 100:
        raise _bad(f"{what} must be a list")
    if not all(v is None or (isinstance(v, str) and len(v) <= 500) for v in value):
        raise _bad(f"{what} must list room types (strings, or null for rooms without one)")
    return tuple(value)


def _filters(body: Any, what: str) -> ListFilters:
    f = _obj(body, what)
    return ListFilters(
        is_dm=_opt_bool(f.get("is_dm"), f"{what}.is_dm"),
        is_invite=_opt_bool(f.get("is_invite"), f"{what}.is_invite"),
        is_encrypted=_opt_bool(f.get("is_encrypted"), f"{what}.is_encrypted"),
        spaces=_str_list(f.get("spaces"), f"{what}.spaces", 100),
        room_types=_room_types(f.get("room_types"), f"{what}.room_types"),
        not_room_types=_room_types(f.get("not_room_types"), f"{what}.not_room_types"),
    )


@dataclass(frozen=True)
class ListRequest:
    name: str
    ranges: tuple[tuple[int, int], ...]
    config: RoomConfig
    filters: ListFilters


def _ranges(value: Any, what: str) -> tuple[tuple[int, int], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_RANGES:
        raise _bad(f"{what} must be a list of at most {MAX_RANGES} [start, end] pairs")
    out = []
    for r in value:
        if (
            not isinstance(r, list)
            or len(r) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in r)
            or r[0] > r[1]
        ):
            raise _bad(f"{what} entries must be [start, end] with 0 <= start <= end")
        out.append((r[0], min(r[1], MAX_RANGE_END)))
    return tuple(out)


@dataclass(frozen=True)
class ExtensionRequest:
    enabled: bool = False
    lists: tuple[str, ...] | None = None  # None: every list ("*" too)
    rooms: tuple[str, ...] | None = None  # None: every room
    since: str | None = None  # to_device


@dataclass(frozen=True)
class SlidingRequest:
    conn_id: str
    lists: tuple[ListRequest, ...]
    subscriptions: dict[str, RoomConfig]
    unsubscribe: tuple[str, ...]
    extensions: dict[str, ExtensionRequest] = field(default_factory=dict)


EXTENSIONS = ("to_device", "e2ee", "account_data", "receipts", "typing")


def parse_request(body: dict[str, Any]) -> SlidingRequest:
    conn_id = body.get("conn_id", "")
    if not isinstance(conn_id, str) or len(conn_id) > MAX_NAME:
        raise _bad("conn_id must be a string")
    lists_body = _obj(body.get("lists"), "lists")
    if len(lists_body) > MAX_LISTS:
        raise _bad(f"at most {MAX_LISTS} lists")
    lists = []
    for name, spec in lists_body.items():
        if len(name) > MAX_NAME:
            raise _bad("list names are at most 200 characters")
        spec = _obj(spec, f"lists.{name}")
        lists.append(
            ListRequest(
                name,
                _ranges(spec.get("ranges"), f"lists.{name}.ranges"),
                _room_config(spec, f"lists.{name}"),
                _filters(spec.get("filters"), f"lists.{name}.filters"),
            )
        )
    subs_body = _obj(body.get("room_subscriptions"), "room_subscriptions")
    if len(subs_body) > MAX_SUBSCRIPTIONS:
        raise _bad(f"at most {MAX_SUBSCRIPTIONS} room subscriptions")
    subscriptions = {
        room_id: _room_config(
            _obj(spec, "room_subscriptions entry"), f"room_subscriptions.{room_id}"
        )
        for room_id, spec in subs_body.items()
    }
    unsubscribe = _str_list(body.get("unsubscribe_rooms"), "unsubscribe_rooms") or ()
    extensions = {}
    ext_body = _obj(body.get("extensions"), "extensions")
    for name in EXTENSIONS:
        spec = _obj(ext_body.get(name), f"extensions.{name}")
        lists_scope = _str_list(spec.get("lists"), f"extensions.{name}.lists")
        rooms_scope = _str_list(spec.get("rooms"), f"extensions.{name}.rooms")
        since = spec.get("since")
        if since is not None and not isinstance(since, str):
            raise _bad(f"extensions.{name}.since must be a string")
        extensions[name] = ExtensionRequest(
            enabled=_opt_bool(spec.get("enabled"), f"extensions.{name}.enabled") is True,
            lists=None if lists_scope is None or "*" in lists_scope else lists_scope,
            rooms=None if rooms_scope is None or "*" in rooms_scope else rooms_scope,
            since=since,
        )
    return SlidingRequest(conn_id, tuple(lists), subscriptions, unsubscribe, extensions)
