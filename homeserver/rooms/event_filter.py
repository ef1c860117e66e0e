"""The RoomEventFilter of /messages and /context (`filter` query parameter).

Supports `limit`, `types`/`not_types` (with `*` wildcards), `senders`/`not_senders`,
`rooms`/`not_rooms`, `contains_url` and `lazy_load_members`/`include_redundant_members`.
Parsing validates every field's type, so a bad filter is a 400, never a 500.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from homeserver.errors import MatrixError
from homeserver.events import Event

MAX_LIST = 1000


def _bad(message: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", f"Invalid filter: {message}")


def _str_list(body: dict[str, Any], key: str) -> tuple[str, ...] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_LIST:
        raise _bad(f"{key} must be a list of strings")
    if not all(isinstance(v, str) and len(v) <= 1000 for v in value):
        raise _bad(f"{key} must be a list of strings")
    return tuple(value)


@lru_cache(maxsize=1024)
def _pattern(glob: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(glob))


def _type_matches(event_type: str, patterns: tuple[str, ...]) -> bool:
    return any(p == event_type or ("*" in p and _pattern(p).match(event_type)) for p in patterns)


@dataclass(frozen=True)
class RoomEventFilter:
    limit: int | None = None
    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()
    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    contains_url: bool | None = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False

    @classmethod
    def from_json(cls, body: Any) -> RoomEventFilter:
        if not isinstance(body, dict):
            raise _bad("must be a JSON object")
        limit = body.get("limit")
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 0
        ):
            raise _bad("limit must be a non-negative integer")
        flags = {}
        for key in ("contains_url", "lazy_load_members", "include_redundant_members"):
            value = body.get(key)
            if value is not None and not isinstance(value, bool):
                raise _bad(f"{key} must be a boolean")
            flags[key] = value
        return cls(
            limit=limit,
            types=_str_list(body, "types"),
            not_types=_str_list(body, "not_types") or (),
            senders=_str_list(body, "senders"),
            not_senders=_str_list(body, "not_senders") or (),
            rooms=_str_list(body, "rooms"),
            not_rooms=_str_list(body, "not_rooms") or (),
            contains_url=flags["contains_url"],
            lazy_load_members=bool(flags["lazy_load_members"]),
            include_redundant_members=bool(flags["include_redundant_members"]),
        )

    @classmethod
    def from_query(cls, text: str | None) -> RoomEventFilter:
        """The `filter` query parameter (JSON text); empty/absent is the no-op filter."""
        if not text:
            return cls()
        if len(text) > 65536:
            raise _bad("too large")
        try:
            body = json.loads(text)
        except ValueError:
            raise MatrixError(400, "M_NOT_JSON", "filter is not valid JSON") from None
        return cls.from_json(body)

    @property
    def is_noop(self) -> bool:
        return self == RoomEventFilter(
            limit=self.limit,
            lazy_load_members=self.lazy_load_members,
            include_redundant_members=self.include_redundant_members,
        )

    def matches_type(self, event_type: str) -> bool:
        if self.not_types and _type_matches(event_type, self.not_types):
            return False
        return self.types is None or _type_matches(event_type, self.types)

    def matches(self, event: Event) -> bool:
        if not self.matches_type(event.type):
            return False
        sender = event.sender
        if sender in self.not_senders:
            return False
        if self.senders is not None and sender not in self.senders:
            return False
        if event.room_id in self.not_rooms:
            return False
        if self.rooms is not None and event.room_id not in self.rooms:
            return False
        if self.contains_url is not None:
            has_url = isinstance(event.content.get("url"), str)
            if has_url != self.contains_url:
                return False
        return True
