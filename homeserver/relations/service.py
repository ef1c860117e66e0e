"""RelationsService: /relations and /threads, and `bundle_aggregations` for every
endpoint that returns events.

Aggregations (client-server API "Aggregations of child events"):
- `m.thread`: {latest_event (client format, itself with its aggregations), count,
  current_user_participated};
- `m.replace`: the most recent *valid* edit (origin_server_ts, then event ID), in client
  format; never for a redacted original;
- `m.reference`: {chunk: [{event_id}, ...]};
- `m.annotation` is not aggregated by the server (spec).
All lookups are batched over the requested events.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from homeserver.errors import MatrixError, not_found
from homeserver.events import Event
from homeserver.rooms.client_events import serialize_events
from homeserver.rooms.pagination import RoomToken
from homeserver.rooms.visibility import filter_events_for_user, is_world_readable
from homeserver.storage import Stores
from homeserver.storage.relations_read import Child, RelationsReadStore

MAX_TRACKED_CHILDLESS = 200_000

DEFAULT_LIMIT = 5
MAX_LIMIT = 100
RECURSION_DEPTH = 3
MAX_RECURSED_CHILDREN = 2000


def _is_valid_edit(original: Event, edit: Event) -> bool:
    """The spec's validity rules for replacement events."""
    if edit.room_id != original.room_id or edit.sender != original.sender:
        return False
    if edit.type != original.type:
        return False
    if original.state_key is not None or edit.state_key is not None:
        return False
    rel = original.content.get("m.relates_to")
    if isinstance(rel, dict) and rel.get("rel_type") == "m.replace":
        return False
    return isinstance(edit.content.get("m.new_content"), dict)


class RelationsService:
    def __init__(self, stores: Stores, store: RelationsReadStore) -> None:
        self._stores = stores
        self._store = store
        # Events persisted since start-up that no relation points at yet: they have
        # nothing to bundle, so fresh timelines (most syncs) need no relation queries.
        self._childless: OrderedDict[str, None] = OrderedDict()

    def on_new_event(self, event: Event, stream_ordering: int) -> None:
        """Persister listener: note new events, and that a relation's target has one."""
        rel = event.content.get("m.relates_to")
        if isinstance(rel, dict) and isinstance(rel.get("event_id"), str):
            self._childless.pop(rel["event_id"], None)
        if stream_ordering > 0:
            self._childless[event.event_id] = None
            if len(self._childless) > MAX_TRACKED_CHILDLESS:
                self._childless.popitem(last=False)

    # -- aggregations ---------------------------------------------------------------------

    async def bundle_aggregations(
        self, events: Iterable[Event | str], user_id: str, *, _depth: int = 0
    ) -> dict[str, dict[str, Any]]:
        """event ID -> the `m.relations` object for it (events without any aggregation
        are absent). Accepts Events or event IDs; state events get none (spec)."""
        loaded: dict[str, Event] = {}
        ids: list[str] = []
        for item in events:
            if isinstance(item, Event):
                loaded[item.event_id] = item
                ids.append(item.event_id)
            else:
                ids.append(item)
        missing = [i for i in ids if i not in loaded]
        if missing:
            loaded.update(await self._stores.events.get_events(missing))
        parents = [e for e in (loaded.get(i) for i in dict.fromkeys(ids)) if e is not None]
        parents = [e for e in parents if not e.is_state() and e.event_id not in self._childless]
        if not parents:
            return {}
        parent_ids = [e.event_id for e in parents]
        redacted = await self._stores.events.get_redacted_because(parent_ids)
        out: dict[str, dict[str, Any]] = {}
        await self._add_threads(parents, user_id, out, _depth)
        await self._add_edits([e for e in parents if e.event_id not in redacted], out)
        refs = await self._store.get_children_of_type(parent_ids, "m.reference")
        for parent_id, children in refs.items():
            out.setdefault(parent_id, {})["m.reference"] = {
                "chunk": [{"event_id": c} for c in children]
            }
        return out

    async def _add_threads(
        self, parents: Sequence[Event], user_id: str, out: dict[str, dict[str, Any]], depth: int
    ) -> None:
        stats = await self._store.get_thread_stats([e.event_id for e in parents])
        if not stats:
            return
        roots = [e for e in parents if e.event_id in stats]
        latest_ids = await self._store.get_event_ids_at([s.latest_stream for s in stats.values()])
        latest_events = await self._stores.events.get_events(latest_ids.values())
        participated = await self._store.get_threads_participated(list(stats), user_id)
        formatted = await self._serialize(list(latest_events.values()), user_id, depth=depth + 1)
        by_id = {f["event_id"]: f for f in formatted}
        for root in roots:
            s = stats[root.event_id]
            latest = by_id.get(latest_ids.get(s.latest_stream, ""))
            if latest is None:
                continue
            out.setdefault(root.event_id, {})["m.thread"] = {
                "latest_event": latest,
                "count": s.count,
                "current_user_participated": root.sender == user_id
                or root.event_id in participated,
            }

    async def _add_edits(self, parents: Sequence[Event], out: dict[str, dict[str, Any]]) -> None:
        if not parents:
            return
        edits = await self._store.get_children_of_type([e.event_id for e in parents], "m.replace")
        if not edits:
            return
        edit_events = await self._stores.events.get_events(
            [eid for ids in edits.values() for eid in ids]
        )
        now = int(time.time() * 1000)
        for parent in parents:
            candidates = [
                edit_events[eid]
                for eid in edits.get(parent.event_id, ())
                if eid in edit_events and _is_valid_edit(parent, edit_events[eid])
            ]
            if not candidates:
                continue
            newest = max(candidates, key=lambda e: (e.origin_server_ts, e.event_id))
            (formatted,) = serialize_events([newest], now_ms=now)
            out.setdefault(parent.event_id, {})["m.replace"] = formatted

    async def _serialize(
        self, events: Sequence[Event], user_id: str, *, depth: int = 0
    ) -> list[dict[str, Any]]:
        """Client format with redactions applied and aggregations bundled."""
        if not events:
            return []
        ids = [e.event_id for e in events]
        redactions = await self._stores.events.get_redaction_events(ids)
        formatted = serialize_events(events, now_ms=int(time.time() * 1000), redactions=redactions)
        if depth <= 1:
            bundles = await self.bundle_aggregations(events, user_id, _depth=depth)
            for item in formatted:
                bundle = bundles.get(item["event_id"])
                if bundle:
                    item.setdefault("unsigned", {})["m.relations"] = bundle
        return formatted

    # -- endpoints ------------------------------------------------------------------------

    async def _visible_parent(self, room_id: str, event_id: str, user_id: str) -> Event:
        event = await self._stores.events.get_event(event_id)
        if event is None or event.room_id != room_id or event.rejected_reason is not None:
            raise not_found("Event not found.")
        if await self._stores.events.is_outlier(event_id):
            raise not_found("Event not found.")
        peeking = await self._is_peeking(room_id, user_id)
        if not await filter_events_for_user(self._stores, user_id, [event], is_peeking=peeking):
            raise not_found("Event not found.")
        return event

    async def _is_peeking(self, room_id: str, user_id: str) -> bool:
        """False for (past) members; True for a world-readable room's outsiders; any
        other outsider may not read the room at all (404, so existence does not leak)."""
        membership = await self._stores.current_state.get_membership(room_id, user_id)
        if membership in ("join", "leave", "ban"):
            return False
        if await is_world_readable(self._stores, room_id):
            return True
        raise not_found("Event not found.")

    async def relations(
        self,
        user_id: str,
        room_id: str,
        event_id: str,
        *,
        rel_type: str | None = None,
        event_type: str | None = None,
        from_token: str | None = None,
        to_token: str | None = None,
        limit: int = DEFAULT_LIMIT,
        direction: Literal["b", "f"] = "b",
        recurse: bool | None = None,
    ) -> dict[str, Any]:
        """The /relations response body."""
        await self._visible_parent(room_id, event_id, user_id)
        peeking = await self._is_peeking(room_id, user_id)
        limit = max(1, min(limit, MAX_LIMIT))
        start = RoomToken.parse(from_token).stream if from_token is not None else None
        stop = RoomToken.parse(to_token).stream if to_token is not None else None
        depth = RECURSION_DEPTH if recurse else 1
        children = await self._descendants(room_id, event_id, depth)
        if rel_type is not None:
            children = [c for c in children if c.rel_type == rel_type]
        if event_type is not None:
            children = [c for c in children if c.type == event_type]
        if direction == "b":
            children.sort(key=lambda c: c.stream_ordering, reverse=True)
            if start is not None:
                children = [c for c in children if c.stream_ordering <= start]
            if stop is not None:
                children = [c for c in children if c.stream_ordering > stop]
        else:
            if start is not None:
                children = [c for c in children if c.stream_ordering > start]
            if stop is not None:
                children = [c for c in children if c.stream_ordering <= stop]
        page = children[:limit]
        loaded = await self._stores.events.get_events([c.event_id for c in page])
        events = [loaded[c.event_id] for c in page if c.event_id in loaded]
        events = await filter_events_for_user(self._stores, user_id, events, is_peeking=peeking)
        body: dict[str, Any] = {"chunk": await self._serialize(events, user_id)}
        if len(children) > limit:
            last = page[-1].stream_ordering
            # Backwards: the next page holds orderings <= last - 1; forwards: > last.
            body["next_batch"] = RoomToken(last - 1 if direction == "b" else last).encode()
        if from_token is not None:
            body["prev_batch"] = from_token
        if recurse is not None:
            body["recursion_depth"] = depth if recurse else 1
        return body

    async def _descendants(self, room_id: str, event_id: str, depth: int) -> list[Child]:
        found: list[Child] = []
        seen = {event_id}
        frontier = [event_id]
        for _ in range(depth):
            children = await self._store.get_children(room_id, frontier)
            frontier = [c.event_id for c in children if c.event_id not in seen]
            seen.update(frontier)
            found.extend(c for c in children if c.event_id in frontier)
            if not frontier or len(found) >= MAX_RECURSED_CHILDREN:
                break
        return found

    async def threads(
        self,
        user_id: str,
        room_id: str,
        *,
        include: str = "all",
        from_token: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> dict[str, Any]:
        """The /threads response body: roots by their latest thread activity."""
        if include not in ("all", "participated"):
            raise MatrixError(400, "M_INVALID_PARAM", "include must be 'all' or 'participated'")
        membership = await self._stores.current_state.get_membership(room_id, user_id)
        if membership not in ("join", "leave", "ban"):
            raise MatrixError(403, "M_FORBIDDEN", "You are not allowed to view this room")
        limit = max(1, min(limit, MAX_LIMIT))
        before = RoomToken.parse(from_token).stream if from_token is not None else None
        rows = await self._store.get_threads(
            room_id,
            before=before,
            limit=limit + 1,
            participant=user_id if include == "participated" else None,
        )
        page = rows[:limit]
        loaded = await self._stores.events.get_events([root for root, _ in page])
        roots = [loaded[r] for r, _ in page if r in loaded]
        roots = await filter_events_for_user(self._stores, user_id, roots)
        body: dict[str, Any] = {"chunk": await self._serialize(roots, user_id)}
        if len(rows) > limit:
            body["next_batch"] = RoomToken(page[-1][1]).encode()
        return body
