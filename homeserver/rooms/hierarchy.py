"""GET /_matrix/client/v1/rooms/{roomId}/hierarchy: a space's tree of rooms, as far as
this server knows the rooms (spec "Spaces"; Synapse's breadth-first walk).

The walk starts at the requested room (which the user must be able to see) and goes
breadth first through `m.space.child` state events that have a `via`. A room is listed
when the user may see it: joined, invited or knocking, world-readable, or open to join
or knock (public, knock, knock_restricted), or restricted with the user joined to one of
its allowed rooms. Its children are walked only if it is listed. Each room appears
once (cycles are cut), with its summary and its `children_state` (stripped child
events with `origin_server_ts`). `suggested_only`, `max_depth` and `limit` are as the
spec says; `from` is an opaque position in the walk, valid only with the same
parameters (else 400 M_INVALID_PARAM).

Rooms we do not know (only other servers are in them) are asked of the servers in
their `m.space.child` event's `via` (`/_matrix/federation/v1/hierarchy`, at most
MAX_VIA_ASKED servers, answers cached REMOTE_CACHE_S): listed when the answer shows them
open to join or knock, world-readable, or restricted to a room the user is in. The
summaries of their children that come with the answer are cached too, so walking a
remote space costs one request per remote space, not per room.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from typing import Any

from homeserver.errors import MatrixError, forbidden
from homeserver.events import Event
from homeserver.storage import Stores
from homeserver.storage.cache import LruCache

from .directory import RemoteDirectory, RoomDirectory

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
# Bounds on one walk: rooms visited (listed or not) and children looked at per room.
MAX_ROOMS_VISITED = 2000
MAX_CHILDREN_PER_ROOM = 500
OPEN_RULES = ("public", "knock", "knock_restricted")
# Remote rooms: servers asked per room, how long an answer is reused, how many are kept.
MAX_VIA_ASKED = 3
REMOTE_CACHE_S = 300.0
MAX_REMOTE_CACHED = 1000
# A remote summary carries only these keys into our answer (no smuggled fields).
SUMMARY_KEYS = (
    "room_id",
    "name",
    "topic",
    "canonical_alias",
    "avatar_url",
    "num_joined_members",
    "world_readable",
    "guest_can_join",
    "join_rule",
    "room_type",
    "encryption",
    "room_version",
    "allowed_room_ids",
    "children_state",
)


def _params_digest(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def _token(params: dict[str, Any], offset: int) -> str:
    """Where the next page starts in the walk, bound to the walk's parameters."""
    return f"{_params_digest(params)}_{offset}"


def _offset(token: str, params: dict[str, Any]) -> int:
    digest, _, offset = token.partition("_")
    if not offset.isdigit() or len(offset) > 9:
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid 'from' token")
    if digest != _params_digest(params):
        raise MatrixError(400, "M_INVALID_PARAM", "'from' was given for other parameters")
    return int(offset)


class SpaceHierarchy:
    def __init__(
        self, stores: Stores, directory: RoomDirectory, remote: RemoteDirectory | None = None
    ) -> None:
        self._stores = stores
        self._directory = directory
        self._remote = remote
        # room_id -> (expiry, summary with children_state) of rooms other servers told of.
        self._remote_rooms: LruCache[str, tuple[float, dict[str, Any]]] = LruCache(
            MAX_REMOTE_CACHED
        )

    def _cached_remote(self, room_id: str) -> dict[str, Any] | None:
        hit = self._remote_rooms.get(room_id)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def _remember_remote(self, summary: Any) -> None:
        if not isinstance(summary, dict) or not isinstance(summary.get("room_id"), str):
            return
        clean = {k: summary[k] for k in SUMMARY_KEYS if k in summary}
        children = clean.get("children_state")
        clean["children_state"] = [
            c
            for c in (children if isinstance(children, list) else [])[:MAX_CHILDREN_PER_ROOM]
            if isinstance(c, dict)
            and c.get("type") == "m.space.child"
            and isinstance(c.get("state_key"), str)
            and isinstance(c.get("content"), dict)
        ]
        expiry = time.monotonic() + REMOTE_CACHE_S
        self._remote_rooms.set(clean["room_id"], (expiry, clean))

    async def _remote_summary(
        self, room_id: str, via: list[Any], suggested_only: bool
    ) -> dict[str, Any] | None:
        cached = self._cached_remote(room_id)
        if cached is not None or self._remote is None:
            return cached
        servers = [v for v in via if isinstance(v, str) and v][:MAX_VIA_ASKED]
        for server in servers:
            answer = await self._remote.hierarchy(server, room_id, suggested_only)
            if answer is None:
                continue
            self._remember_remote(answer["room"])
            for child in answer["children"][:MAX_CHILDREN_PER_ROOM]:
                self._remember_remote(child)
            return self._cached_remote(room_id)
        return None

    async def _may_see_remote(self, user_id: str, summary: dict[str, Any]) -> bool:
        if summary.get("world_readable") is True or summary.get("join_rule") in OPEN_RULES:
            return True
        allowed = summary.get("allowed_room_ids")
        if summary.get("join_rule") == "restricted" and isinstance(allowed, list):
            for other in allowed[:50]:
                if (
                    isinstance(other, str)
                    and await self._stores.current_state.get_membership(other, user_id) == "join"
                ):
                    return True
        return False

    async def _may_see(self, room_id: str, user_id: str, summary: dict[str, Any]) -> bool:
        info = await self._stores.current_state.get_membership_info(room_id, user_id)
        if (
            info is not None
            and info.membership in ("join", "invite", "knock")
            and not await self._stores.events.is_outlier(info.event_id)
        ):
            return True
        if summary["world_readable"] or summary["join_rule"] in OPEN_RULES:
            return True
        if summary["join_rule"] == "restricted":
            return await self._allowed_by_restriction(room_id, user_id)
        return False

    async def _allowed_by_restriction(self, room_id: str, user_id: str) -> bool:
        event_id = await self._stores.current_state.get_current_state_event_id(
            room_id, "m.room.join_rules", ""
        )
        event = await self._stores.events.get_event(event_id) if event_id else None
        allow = event.content.get("allow") if event is not None else None
        if not isinstance(allow, list):
            return False
        for item in allow[:50]:
            other = item.get("room_id") if isinstance(item, dict) else None
            if (
                isinstance(other, str)
                and await self._stores.current_state.get_membership(other, user_id) == "join"
            ):
                return True
        return False

    async def _children(self, room_id: str) -> list[Event]:
        ids = await self._stores.current_state.get_current_state_ids(room_id, ["m.space.child"])
        events = await self._stores.events.get_events(list(ids.values())[:MAX_CHILDREN_PER_ROOM])
        children = [
            e
            for e in events.values()
            if isinstance(e.content.get("via"), list) and e.content["via"] and e.state_key
        ]

        # The spec's ordering: `order` (strings), then origin_server_ts, then room ID.
        def key(e: Event) -> tuple[int, str, int, str]:
            raw = e.content.get("order")
            order = raw if isinstance(raw, str) and 0 < len(raw) <= 50 and raw.isprintable() else ""
            return (
                0 if order else 1,
                order,
                e.origin_server_ts,
                e.state_key or "",
            )

        return sorted(children, key=key)

    async def hierarchy(
        self,
        room_id: str,
        user_id: str,
        *,
        suggested_only: bool = False,
        max_depth: int | None = None,
        limit: int | None = None,
        from_token: str | None = None,
    ) -> dict[str, Any]:
        params = {"room": room_id, "suggested_only": suggested_only, "max_depth": max_depth}
        offset = _offset(from_token, params) if from_token is not None else 0
        limit = DEFAULT_LIMIT if limit is None else max(1, min(limit, MAX_LIMIT))
        if await self._stores.rooms.get_room_version(room_id) is None:
            raise forbidden("You cannot view this room")
        root = await self._directory.room_summary(room_id)
        if not await self._may_see(room_id, user_id, root):
            raise forbidden("You cannot view this room")

        listed: list[dict[str, Any]] = []
        seen = {room_id}
        queue: deque[tuple[str, int, dict[str, Any]]] = deque([(room_id, 0, root)])
        visited = 0
        while queue and visited < MAX_ROOMS_VISITED and len(listed) < offset + limit + 1:
            current, depth, summary = queue.popleft()
            visited += 1
            entry = dict(summary)
            if "children_state" in summary:  # a remote room: as its server told us
                children_state = list(summary["children_state"])
            else:
                children_state = [
                    {
                        "type": c.type,
                        "state_key": c.state_key,
                        "content": c.content,
                        "sender": c.sender,
                        "origin_server_ts": c.origin_server_ts,
                    }
                    for c in await self._children(current)
                ]
            entry["children_state"] = [
                c
                for c in children_state
                if not suggested_only or c["content"].get("suggested") is True
            ]
            listed.append(entry)
            if max_depth is not None and depth >= max_depth:
                continue
            for child in entry["children_state"]:
                child_id = child["state_key"]
                via = child["content"].get("via")
                if child_id in seen or not isinstance(via, list) or not via:
                    continue
                seen.add(child_id)
                if await self._stores.rooms.get_room_version(child_id) is not None:
                    child_summary = await self._directory.room_summary(child_id)
                    if await self._may_see(child_id, user_id, child_summary):
                        queue.append((child_id, depth + 1, child_summary))
                    continue
                remote = await self._remote_summary(child_id, via, suggested_only)
                if remote is not None and await self._may_see_remote(user_id, remote):
                    queue.append((child_id, depth + 1, remote))
        page = listed[offset : offset + limit]
        body: dict[str, Any] = {"rooms": page}
        if len(listed) > offset + limit or (queue and visited < MAX_ROOMS_VISITED):
            body["next_batch"] = _token(params, offset + len(page))
        return body
