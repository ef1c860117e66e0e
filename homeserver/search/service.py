"""POST /search (room_events): server-side message search, as Synapse answers it.

Searched: the rooms the user is joined to now (Synapse's choice), narrowed by the
request's filter. Shown: only what the user may see of each match (history visibility
at the event, erasure), never redacted text (redacted events leave the index) and
never encrypted events (they are not indexed). `order_by: recent` pages newest first
with `next_batch`, every match once; `rank` gives the best matches of the best
RANK_CANDIDATES, without `next_batch`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from homeserver.errors import MatrixError
from homeserver.events import Event
from homeserver.rooms.event_filter import RoomEventFilter
from homeserver.rooms.reader import RoomReader
from homeserver.rooms.visibility import filter_events_for_user
from homeserver.search.query import (
    ALL_KEYS,
    INDEXED_FIELDS,
    highlights,
    parse_query,
    positive_words,
    to_fts5,
    to_tsquery,
)
from homeserver.storage import Stores
from homeserver.storage.search import SearchHit, SearchStore

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
RANK_CANDIDATES = 500
# Rounds of fetching more matches when visibility hides some (recent order).
MAX_ROUNDS = 5
DEFAULT_CONTEXT = 5
MAX_CONTEXT = 20
GROUP_KEYS = ("room_id", "sender")
_KEY_OF_TYPE = {event_type: key for event_type, (key, _field) in INDEXED_FIELDS.items()}


def _bad(message: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", message)


def _int_field(body: dict[str, Any], key: str, default: int, hi: int) -> int:
    value = body.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad(f"{key} must be a non-negative integer")
    return min(value, hi)


class SearchService:
    def __init__(self, stores: Stores, search: SearchStore, reader: RoomReader) -> None:
        self._stores = stores
        self._search = search
        self._reader = reader

    async def search(
        self, user_id: str, device_id: str | None, body: dict[str, Any], batch: str | None
    ) -> dict[str, Any]:
        categories = body.get("search_categories")
        if not isinstance(categories, dict):
            raise _bad("search_categories must be an object")
        criteria = categories.get("room_events")
        if criteria is None:
            return {"search_categories": {}}
        if not isinstance(criteria, dict):
            raise _bad("room_events must be an object")
        result = await self._room_events(user_id, device_id, criteria, batch)
        return {"search_categories": {"room_events": result}}

    async def _room_events(
        self, user_id: str, device_id: str | None, criteria: dict[str, Any], batch: str | None
    ) -> dict[str, Any]:
        term = criteria.get("search_term")
        if not isinstance(term, str):
            raise MatrixError(400, "M_MISSING_PARAM", "search_term must be a string")
        keys = criteria.get("keys", list(ALL_KEYS))
        if not isinstance(keys, list) or not all(k in ALL_KEYS for k in keys):
            raise MatrixError(400, "M_INVALID_PARAM", f"keys must be a list of {list(ALL_KEYS)}")
        order = criteria.get("order_by", "rank")
        if order not in ("rank", "recent"):
            raise MatrixError(400, "M_INVALID_PARAM", "order_by must be rank or recent")
        event_filter = RoomEventFilter.from_json(criteria.get("filter") or {})
        limit = min(
            event_filter.limit if event_filter.limit is not None else DEFAULT_LIMIT, MAX_LIMIT
        )
        context = criteria.get("event_context")
        if context is not None and not isinstance(context, dict):
            raise _bad("event_context must be an object")
        groupings = self._group_keys(criteria.get("groupings"))
        include_state = criteria.get("include_state", False)
        if not isinstance(include_state, bool):
            raise _bad("include_state must be a boolean")
        before = self._parse_batch(batch)

        # Which events can match: the filter's types narrow the keys.
        keys = [
            k
            for k in dict.fromkeys(keys)
            if any(
                key == k and event_filter.matches_type(event_type)
                for event_type, key in _KEY_OF_TYPE.items()
            )
        ]
        rooms = await self._rooms(user_id, event_filter)
        query = parse_query(term)
        empty: dict[str, Any] = {"results": [], "count": 0, "highlights": []}
        if not query or not rooms or not keys or limit == 0:
            return empty
        fts5, tsquery = to_fts5(query), to_tsquery(query)

        # The count runs beside the search (each reader connection has its own thread).
        counting = asyncio.ensure_future(self._search.count(fts5, tsquery, rooms, keys))
        try:
            found, next_before = await self._matches(
                user_id, fts5, tsquery, rooms, keys, order, before, limit, event_filter
            )
        except BaseException:
            counting.cancel()
            raise
        count = await counting
        words = positive_words(query)
        marked: set[str] = set()
        for event, _hit in found:
            field = INDEXED_FIELDS[event.type][1]
            text = event.content.get(field)
            if isinstance(text, str):
                marked |= highlights(text, words)

        events = [e for e, _ in found]
        serialized = await self._reader.serialize(events, user_id, device_id)
        results: list[dict[str, Any]] = []
        for (event, hit), item in zip(found, serialized, strict=True):
            entry: dict[str, Any] = {"rank": hit.rank, "result": item}
            if context is not None:
                entry["context"] = await self._context(user_id, device_id, event, context)
            results.append(entry)
        out: dict[str, Any] = {
            "results": results,
            "count": max(count, len(results)),
            "highlights": sorted(marked),
        }
        next_batch = f"s{next_before}" if next_before is not None else None
        if next_batch:
            out["next_batch"] = next_batch
        if groupings:
            out["groups"] = self._groups(found, groupings, next_batch)
        if include_state:
            out["state"] = {
                room_id: await self._reader.state(room_id, user_id, device_id)
                for room_id in dict.fromkeys(e.room_id for e in events)
            }
        return out

    @staticmethod
    def _group_keys(groupings: Any) -> list[str]:
        if groupings is None:
            return []
        if not isinstance(groupings, dict):
            raise _bad("groupings must be an object")
        group_by = groupings.get("group_by", [])
        if not isinstance(group_by, list):
            raise _bad("group_by must be a list")
        keys = []
        for group in group_by:
            key = group.get("key") if isinstance(group, dict) else None
            if key not in GROUP_KEYS:
                raise MatrixError(400, "M_INVALID_PARAM", "group_by key must be room_id or sender")
            keys.append(key)
        return keys

    @staticmethod
    def _parse_batch(batch: str | None) -> int | None:
        if batch is None:
            return None
        body = batch[1:] if batch.startswith("s") else ""
        if not body.lstrip("-").isdigit() or len(body) > 20:
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid next_batch")
        return int(body)

    async def _rooms(self, user_id: str, event_filter: RoomEventFilter) -> list[str]:
        joined = await self._stores.current_state.get_rooms_for_user(user_id)
        rooms = [r for r in sorted(joined) if r not in event_filter.not_rooms]
        if event_filter.rooms is not None:
            wanted = set(event_filter.rooms)
            rooms = [r for r in rooms if r in wanted]
        return rooms

    async def _matches(
        self,
        user_id: str,
        fts5: str,
        tsquery: str,
        rooms: list[str],
        keys: list[str],
        order: str,
        before: int | None,
        limit: int,
        event_filter: RoomEventFilter,
    ) -> tuple[list[tuple[Event, SearchHit]], int | None]:
        """(visible matches, the stream ordering the next page starts below, if any)."""
        senders = list(event_filter.senders) if event_filter.senders is not None else None
        if order == "rank":
            hits = await self._search.search(
                fts5, tsquery, rooms, keys, order="rank", before=None,
                limit=RANK_CANDIDATES, senders=senders,
            )  # fmt: skip
            shown = await self._visible(user_id, hits, event_filter)
            return shown[:limit], None
        found: list[tuple[Event, SearchHit]] = []
        batch_size = min(limit * 2 + 10, 500)
        for _ in range(MAX_ROUNDS):
            hits = await self._search.search(
                fts5, tsquery, rooms, keys, order="recent", before=before,
                limit=batch_size, senders=senders,
            )  # fmt: skip
            if not hits:
                return found, None
            for event, hit in await self._visible(user_id, hits, event_filter):
                found.append((event, hit))
                if len(found) == limit:
                    return found, hit.stream_ordering
            before = hits[-1].stream_ordering
            if len(hits) < batch_size:
                return found, None
        # Gave up scanning for now: the client continues from where we stopped.
        return found, before

    async def _visible(
        self, user_id: str, hits: list[SearchHit], event_filter: RoomEventFilter
    ) -> list[tuple[Event, SearchHit]]:
        """Hits as events the user may see, in the hits' order."""
        loaded = await self._stores.events.get_events([h.event_id for h in hits])
        redacted = await self._stores.events.get_redacted_because(list(loaded))
        by_room: dict[str, list[Event]] = {}
        for hit in hits:
            event = loaded.get(hit.event_id)
            if event is None or hit.event_id in redacted or not event_filter.matches(event):
                continue
            by_room.setdefault(hit.room_id, []).append(event)
        shown: dict[str, Event] = {}
        for events in by_room.values():
            for event in await filter_events_for_user(self._stores, user_id, events):
                field = INDEXED_FIELDS[event.type][1]
                if isinstance(event.content.get(field), str):  # not shown pruned (erased)
                    shown[event.event_id] = event
        return [(shown[h.event_id], h) for h in hits if h.event_id in shown]

    async def _context(
        self, user_id: str, device_id: str | None, event: Event, spec: dict[str, Any]
    ) -> dict[str, Any]:
        before = _int_field(spec, "before_limit", DEFAULT_CONTEXT, MAX_CONTEXT)
        after = _int_field(spec, "after_limit", DEFAULT_CONTEXT, MAX_CONTEXT)
        include_profile = spec.get("include_profile", False)
        context = await self._reader.around(
            event.room_id, user_id, device_id, event.event_id, before, after
        )
        if include_profile is True:
            senders = {event.sender}
            for item in (*context["events_before"], *context["events_after"]):
                senders.add(item["sender"])
            context["profile_info"] = await self._profiles(event, senders)
        return context

    async def _profiles(self, event: Event, senders: set[str]) -> dict[str, Any]:
        """Each sender's name and avatar as the room's state at the event had them."""
        state = await self._stores.state.read_state_ids_for_event(event.event_id) or {}
        ids = {s: state[("m.room.member", s)] for s in senders if ("m.room.member", s) in state}
        members = await self._stores.events.get_events(ids.values())
        out: dict[str, Any] = {}
        for sender, member_id in ids.items():
            member = members.get(member_id)
            if member is None:
                continue
            profile = {}
            for field in ("displayname", "avatar_url"):
                value = member.content.get(field)
                if isinstance(value, str):
                    profile[field] = value
            out[sender] = profile
        return out

    @staticmethod
    def _groups(
        found: list[tuple[Event, SearchHit]], keys: list[str], next_batch: str | None
    ) -> dict[str, Any]:
        groups: dict[str, Any] = {}
        for key in keys:
            per: dict[str, dict[str, Any]] = {}
            for event, _hit in found:
                value = event.room_id if key == "room_id" else event.sender
                group = per.setdefault(value, {"results": [], "order": len(per) + 1})
                group["results"].append(event.event_id)
                if next_batch:
                    group["next_batch"] = next_batch
            groups[key] = per
        return groups
