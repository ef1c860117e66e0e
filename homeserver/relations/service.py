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
from homeserver.rooms.access import Access, reader_access
from homeserver.rooms.client_events import serialize_events
from homeserver.rooms.pagination import RoomToken
from homeserver.rooms.visibility import filter_events_for_user
from homeserver.storage import Stores
from homeserver.storage.relations_read import Child, RelationsReadStore
from homeserver.storage.room_directory import RoomReadStore

MAX_TRACKED_CHILDLESS = 200_000

DEFAULT_LIMIT = 5
MAX_LIMIT = 100
RECURSION_DEPTH = 3
MAX_RECURSED_CHILDREN = 2000
# Threads looked at for a departed reader's /threads (newest activity first).
MAX_CAPPED_THREAD_SCAN = 500


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
    def __init__(
        self, stores: Stores, store: RelationsReadStore, read_store: RoomReadStore
    ) -> None:
        self._stores = stores
        self._store = store
        self._read = read_store
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
        self,
        events: Iterable[Event | str],
        user_id: str,
        *,
        cap: int | None = None,
        _depth: int = 0,
    ) -> dict[str, dict[str, Any]]:
        """event ID -> the `m.relations` object for it (events without any aggregation
        are absent). Accepts Events or event IDs; state events get none (spec).

        `cap`: the reader left the room at that stream position; replies, edits and
        references after it are none of their business and count for nothing."""
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
        if cap is not None:
            return await self._bundle_capped(parents, user_id, cap, _depth)
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

    async def _bundle_capped(
        self, parents: Sequence[Event], user_id: str, cap: int, depth: int
    ) -> dict[str, dict[str, Any]]:
        """bundle_aggregations for a departed reader: built from the children that
        existed at their leave (slower than the summary tables, and only for them)."""
        out: dict[str, dict[str, Any]] = {}
        redacted = await self._stores.events.get_redacted_because([e.event_id for e in parents])
        by_room: dict[str, list[Event]] = {}
        for parent in parents:
            by_room.setdefault(parent.room_id, []).append(parent)
        for room_id, room_parents in by_room.items():
            children = [
                c
                for c in await self._store.get_children(room_id, [p.event_id for p in room_parents])
                if c.stream_ordering <= cap
            ]
            loaded = await self._stores.events.get_events([c.event_id for c in children])
            for parent in room_parents:
                mine = [c for c in children if c.parent_id == parent.event_id]
                thread = [c for c in mine if c.rel_type == "m.thread"]
                if thread:
                    latest_child = max(thread, key=lambda c: c.stream_ordering)
                    latest = loaded.get(latest_child.event_id)
                    if latest is not None:
                        (formatted,) = await self._serialize(
                            [latest], user_id, depth=depth + 1, cap=cap
                        )
                        out.setdefault(parent.event_id, {})["m.thread"] = {
                            "latest_event": formatted,
                            "count": len(thread),
                            "current_user_participated": parent.sender == user_id
                            or any(c.sender == user_id for c in thread),
                        }
                edits = [
                    loaded[c.event_id]
                    for c in mine
                    if c.rel_type == "m.replace"
                    and c.event_id in loaded
                    and _is_valid_edit(parent, loaded[c.event_id])
                ]
                if edits and parent.event_id not in redacted:
                    newest = max(edits, key=lambda e: (e.origin_server_ts, e.event_id))
                    (edit,) = serialize_events([newest], now_ms=int(time.time() * 1000))
                    out.setdefault(parent.event_id, {})["m.replace"] = edit
                refs = [c.event_id for c in mine if c.rel_type == "m.reference"]
                if refs:
                    out.setdefault(parent.event_id, {})["m.reference"] = {
                        "chunk": [{"event_id": r} for r in refs]
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
        self, events: Sequence[Event], user_id: str, *, depth: int = 0, cap: int | None = None
    ) -> list[dict[str, Any]]:
        """Client format with redactions applied and aggregations bundled."""
        if not events:
            return []
        ids = [e.event_id for e in events]
        redactions = await self._stores.events.get_redaction_events(ids)
        formatted = serialize_events(events, now_ms=int(time.time() * 1000), redactions=redactions)
        if depth <= 1:
            bundles = await self.bundle_aggregations(events, user_id, cap=cap, _depth=depth)
            for item in formatted:
                bundle = bundles.get(item["event_id"])
                if bundle:
                    item.setdefault("unsigned", {})["m.relations"] = bundle
        return formatted

    # -- endpoints ------------------------------------------------------------------------

    async def _access(self, room_id: str, user_id: str) -> Access:
        """The same access as /messages (404 when none, so existence does not leak)."""
        try:
            return await reader_access(self._stores, self._read, room_id, user_id)
        except MatrixError:
            raise not_found("Event not found.") from None

    async def _visible_parent(
        self, room_id: str, event_id: str, user_id: str, access: Access
    ) -> Event:
        event = await self._stores.events.get_event(event_id)
        if event is None or event.room_id != room_id or event.rejected_reason is not None:
            raise not_found("Event not found.")
        if await self._stores.events.is_outlier(event_id):
            raise not_found("Event not found.")
        so = await self._stores.events.get_stream_ordering(event_id)
        if so is None or not access.allows_stream(so):
            raise not_found("Event not found.")
        visible = await filter_events_for_user(
            self._stores, user_id, [event], is_peeking=access.is_peeking
        )
        if not visible:
            raise not_found("Event not found.")
        return event

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
        access = await self._access(room_id, user_id)
        await self._visible_parent(room_id, event_id, user_id, access)
        peeking = access.is_peeking
        limit = max(1, min(limit, MAX_LIMIT))
        start = RoomToken.parse(from_token).stream if from_token is not None else None
        stop = RoomToken.parse(to_token).stream if to_token is not None else None
        depth = RECURSION_DEPTH if recurse else 1
        children = [
            c
            for c in await self._descendants(room_id, event_id, depth)
            if access.allows_stream(c.stream_ordering)
        ]
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
        body: dict[str, Any] = {"chunk": await self._serialize(events, user_id, cap=access.cap)}
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
        access = await reader_access(self._stores, self._read, room_id, user_id)
        limit = max(1, min(limit, MAX_LIMIT))
        before = RoomToken.parse(from_token).stream if from_token is not None else None
        if access.cap is not None:
            # A departed reader: threads by their activity up to the leave only.
            return await self._threads_capped(user_id, room_id, access, include, before, limit)
        rows = await self._store.get_threads(
            room_id,
            before=before,
            limit=limit + 1,
            participant=user_id if include == "participated" else None,
        )
        page = rows[:limit]
        loaded = await self._stores.events.get_events([root for root, _ in page])
        roots = [loaded[r] for r, _ in page if r in loaded]
        roots = await filter_events_for_user(
            self._stores, user_id, roots, is_peeking=access.is_peeking
        )
        body: dict[str, Any] = {"chunk": await self._serialize(roots, user_id)}
        if len(rows) > limit:
            body["next_batch"] = RoomToken(page[-1][1]).encode()
        return body

    async def _threads_capped(
        self,
        user_id: str,
        room_id: str,
        access: Access,
        include: str,
        before: int | None,
        limit: int,
    ) -> dict[str, Any]:
        """/threads for a departed reader: roots ordered by their last reply before the
        leave; replies after it neither count nor show (bounded scan)."""
        cap = access.cap
        assert cap is not None
        rows = await self._store.get_threads(
            room_id, before=None, limit=MAX_CAPPED_THREAD_SCAN, participant=None
        )
        root_ids = [root for root, _ in rows]
        children = await self._store.get_children(room_id, root_ids)
        latest: dict[str, int] = {}
        participants: dict[str, set[str]] = {}
        for c in children:
            if c.rel_type != "m.thread" or c.stream_ordering > cap:
                continue
            latest[c.parent_id] = max(latest.get(c.parent_id, 0), c.stream_ordering)
            participants.setdefault(c.parent_id, set()).add(c.sender)
        loaded = await self._stores.events.get_events(list(latest))
        ordered = sorted(latest.items(), key=lambda kv: kv[1], reverse=True)
        if before is not None:
            ordered = [(r, so) for r, so in ordered if so <= before]
        if include == "participated":
            ordered = [
                (r, so)
                for r, so in ordered
                if user_id in participants.get(r, set())
                or (r in loaded and loaded[r].sender == user_id)
            ]
        page = ordered[:limit]
        roots = [loaded[r] for r, _ in page if r in loaded]
        roots = await filter_events_for_user(self._stores, user_id, roots)
        body: dict[str, Any] = {"chunk": await self._serialize(roots, user_id, cap=cap)}
        if len(ordered) > limit:
            body["next_batch"] = RoomToken(page[-1][1] - 1).encode()
        return body
