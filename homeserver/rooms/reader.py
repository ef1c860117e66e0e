"""Reading rooms for clients: state, members, single events, /messages, /context.

Every read goes through `RoomReader.access` first (who may read what, and up to where),
then through history visibility (`rooms.visibility`), and every event leaves in client
format (`rooms.client_events`) with its `unsigned` filled from bulk lookups.

Access (as Synapse does it): a joined user reads the live room; a user who left or was
banned reads the room as it was at their departure (state at their leave, no events
after it); anybody may read a `world_readable` room as a peeker; everyone else gets
403 M_FORBIDDEN, also for rooms we do not know (so existence does not leak).
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any, Literal

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.events import Event
from homeserver.storage import MembershipInfo, Stores
from homeserver.storage.room_directory import RoomReadStore

from .access import SERVER_ADMIN, Access, reader_access
from .client_events import serialize_events
from .event_filter import RoomEventFilter
from .pagination import RoomToken
from .ports import Aggregations, Backfill
from .visibility import filter_events_for_user

log = logging.getLogger(__name__)

MAX_LIMIT = 1000
# How many raw events one /messages call may scan looking for visible, matching ones.
SCAN_FACTOR = 10
FAR_PAST = -(2**62)
# How many times one backwards /messages call may ask other servers for older history.
MAX_BACKFILL_ROUNDS = 3


class RoomReader:
    def __init__(
        self,
        stores: Stores,
        read_store: RoomReadStore,
        *,
        aggregations: Aggregations | None = None,
        backfill: Backfill | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stores = stores
        self._read = read_store
        self._clock = clock
        # Fetches history from before our server joined (None without federation).
        self._backfill = backfill
        # Bundled aggregations (unsigned["m.relations"]).
        self._aggregations = aggregations

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- access ---------------------------------------------------------------------------

    async def access(self, room_id: str, user_id: str, *, server_admin: bool = False) -> Access:
        """How `user_id` may read the room; `server_admin`: the admin API's caller, who
        reads everything of any room we know (404 for rooms we do not)."""
        if server_admin:
            if await self._stores.rooms.get_room_version(room_id) is None:
                raise not_found("Room not found")
            return SERVER_ADMIN
        return await reader_access(self._stores, self._read, room_id, user_id)

    async def _state_ids_for(self, room_id: str, access: Access) -> dict[tuple[str, str], str]:
        if access.cap_event_id is not None:
            state = await self._stores.state.get_state_ids_for_event(access.cap_event_id)
            if state is not None:
                return state
        return await self._stores.current_state.get_current_state_ids(room_id)

    # -- serialisation ----------------------------------------------------------------------

    async def serialize(
        self,
        events: Sequence[Event],
        user_id: str,
        device_id: str | None,
        *,
        prev_state: bool = True,
        bundles: dict[str, dict[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Client-format events with redactions applied and `unsigned` filled in.

        `bundles` (from `bundle`) adds each event's aggregations as
        unsigned["m.relations"]; callers fetch them once per response."""
        if not events:
            return []
        ids = [e.event_id for e in events]
        redactions = await self._stores.events.get_redaction_events(ids)
        own = [e.event_id for e in events if e.sender == user_id]
        txn_ids = await self._read.get_txn_ids(user_id, device_id, own) if own else {}
        previous = await self._replaced_state(events) if prev_state else {}
        formatted = serialize_events(
            events,
            now_ms=self.now_ms(),
            redactions=redactions,
            txn_ids=txn_ids,
            prev_state=previous,
        )
        if bundles:
            for item in formatted:
                bundle = bundles.get(item["event_id"])
                if bundle:
                    item.setdefault("unsigned", {})["m.relations"] = bundle
        return formatted

    async def bundle(
        self, events: Sequence[Event], user_id: str, cap: int | None = None
    ) -> dict[str, dict[str, Any]]:
        """Aggregations for `events` in one batched call ({} when not wired); `cap`: a
        departed reader's leave, past which no child event counts."""
        if self._aggregations is None or not events:
            return {}
        return await self._aggregations(events, user_id, cap=cap)

    async def _replaced_state(self, events: Sequence[Event]) -> dict[str, Event]:
        """state event ID -> the event it replaced at its (type, state_key)."""
        state_events = [e for e in events if e.is_state() and not e.is_create()]
        if not state_events:
            return {}
        groups = await self._stores.state.get_state_groups_for_events(
            [e.event_id for e in state_events]
        )
        parents = await self._read.get_prev_groups(groups.values())
        replaced: dict[str, str] = {}
        for ev in state_events:
            parent = parents.get(groups.get(ev.event_id, -1))
            if parent is not None:
                before = await self._stores.state.read_state_ids(parent)
            elif ev.prev_event_ids:
                found = await self._stores.state.read_state_ids_for_event(ev.prev_event_ids[0])
                before = found or {}
            else:
                before = {}
            prev_id = before.get(ev.state_tuple)
            if prev_id is not None and prev_id != ev.event_id:
                replaced[ev.event_id] = prev_id
        if not replaced:
            return {}
        loaded = await self._stores.events.get_events(set(replaced.values()))
        return {e: loaded[p] for e, p in replaced.items() if p in loaded}

    # -- state ------------------------------------------------------------------------------

    async def state(self, room_id: str, user_id: str, device_id: str | None) -> list[dict]:
        access = await self.access(room_id, user_id)
        ids = await self._state_ids_for(room_id, access)
        events = await self._stores.events.get_events(ids.values())
        ordered = [events[e] for e in ids.values() if e in events]
        return await self.serialize(ordered, user_id, device_id)

    async def state_event(
        self, room_id: str, user_id: str, device_id: str | None, event_type: str, state_key: str
    ) -> dict[str, Any]:
        """The client-format state event at (type, state_key); 404 if there is none."""
        access = await self.access(room_id, user_id)
        ids = await self._state_ids_for(room_id, access)
        event_id = ids.get((event_type, state_key))
        event = await self._stores.events.get_event(event_id) if event_id else None
        if event is None:
            raise not_found("Event not found.")
        (formatted,) = await self.serialize([event], user_id, device_id)
        return formatted

    async def members(
        self,
        room_id: str,
        user_id: str,
        device_id: str | None,
        *,
        at: RoomToken | None = None,
        membership: str | None = None,
        not_membership: str | None = None,
    ) -> list[dict[str, Any]]:
        access = await self.access(room_id, user_id)
        cap = access.cap
        if at is not None:
            cap = at.stream if cap is None else min(cap, at.stream)
        if cap is not None:
            last = await self._read.last_event_at(room_id, cap)
            state = await self._stores.state.read_state_ids_for_event(last) if last else None
            ids = state or {}
        else:
            ids = await self._stores.current_state.get_current_state_ids(room_id, ["m.room.member"])
        member_ids = [e for (t, _), e in ids.items() if t == "m.room.member"]
        events = await self._stores.events.get_events(member_ids)
        chosen = []
        for eid in member_ids:
            ev = events.get(eid)
            if ev is None:
                continue
            if membership is not None and ev.membership != membership:
                continue
            if not_membership is not None and ev.membership == not_membership:
                continue
            chosen.append(ev)
        chosen.sort(key=lambda e: e.state_key or "")
        return await self.serialize(chosen, user_id, device_id)

    async def joined_members(self, room_id: str, user_id: str) -> dict[str, dict[str, Any]]:
        access = await self.access(room_id, user_id)
        if access.membership != "join" and not access.is_peeking:
            raise forbidden(f"User {user_id} not in room {room_id}")
        ids = await self._stores.current_state.get_current_state_ids(room_id, ["m.room.member"])
        events = await self._stores.events.get_events(ids.values())
        joined: dict[str, dict[str, Any]] = {}
        for (_, member), eid in sorted(ids.items()):
            ev = events.get(eid)
            if ev is None or ev.membership != "join":
                continue
            profile: dict[str, Any] = {}
            for src, dst in (("displayname", "display_name"), ("avatar_url", "avatar_url")):
                value = ev.content.get(src)
                if isinstance(value, str):
                    profile[dst] = value
            joined[member] = profile
        return joined

    # -- events -----------------------------------------------------------------------------

    async def _visible(self, events: Sequence[Event], user_id: str, access: Access) -> list[Event]:
        if access.sees_all:  # still not what the room's retention policy expired
            return await self._stores.retention.drop_expired(events)
        return await filter_events_for_user(
            self._stores, user_id, events, is_peeking=access.is_peeking
        )

    async def _room_event(self, room_id: str, event_id: str) -> tuple[Event, int]:
        event = await self._stores.events.get_event(event_id)
        so = await self._stores.events.get_stream_ordering(event_id) if event else None
        if event is None or so is None or event.room_id != room_id:
            raise not_found("Event not found.")
        if event.rejected_reason is not None or await self._stores.events.is_outlier(event_id):
            raise not_found("Event not found.")
        return event, so

    async def event(
        self, room_id: str, user_id: str, device_id: str | None, event_id: str
    ) -> dict[str, Any]:
        try:
            access = await self.access(room_id, user_id)
        except MatrixError as e:
            if e.status != 403:
                raise
            # As the spec and Synapse: an event you may not see is one that isn't there.
            raise not_found("Event not found.") from None
        event, so = await self._room_event(room_id, event_id)
        if access.cap is not None and so > access.cap:
            raise not_found("Event not found.")
        shown = await self._visible([event], user_id, access)
        if not shown:
            raise not_found("Event not found.")
        event = shown[0]
        bundles = await self.bundle([event], user_id, access.cap)
        (formatted,) = await self.serialize([event], user_id, device_id, bundles=bundles)
        return formatted

    async def _paginate(
        self,
        room_id: str,
        user_id: str,
        access: Access,
        start: int,
        stop: int | None,
        direction: Literal["f", "b"],
        limit: int,
        event_filter: RoomEventFilter,
    ) -> tuple[list[Event], int, bool]:
        """Up to `limit` visible, matching events from `start` towards `stop`.

        Returns (events in direction order, the position after the last one returned,
        whether the room has no more events that way).
        """
        found: list[Event] = []
        pos = start
        budget = SCAN_FACTOR * limit + 100
        batch = min(max(limit * 2, 20), 500)
        while len(found) < limit and budget > 0:
            rows = await self._stores.events.get_room_events_between(
                room_id, pos, stop, batch, direction
            )
            budget -= batch
            if not rows:
                return found, pos, True
            joined_at = access.joined_at if access.joined_at is not None else 2**62
            matching = [r for r in rows if event_filter.matches(r.event)]
            if self._stores.retention.enabled:  # expired messages are never served
                live = await self._stores.retention.drop_expired([r.event for r in matching])
                kept = {e.event_id for e in live}
                matching = [r for r in matching if r.event.event_id in kept]
            # Events after the user's current join need no state lookups.
            visible = {r.event.event_id: r.event for r in matching if r.stream_ordering > joined_at}
            older = [r.event for r in matching if r.stream_ordering <= joined_at]
            # As filtered: an erased sender's event may come back redacted.
            visible.update((e.event_id, e) for e in await self._visible(older, user_id, access))
            for row in rows:
                shown = visible.get(row.event.event_id)
                if shown is not None:
                    found.append(shown)
                pos = row.stream_ordering - 1 if direction == "b" else row.stream_ordering
                if len(found) >= limit:
                    break
            if len(rows) < batch and len(found) < limit:
                return found, pos, True
        return found, pos, False

    async def messages(
        self,
        room_id: str,
        user_id: str,
        device_id: str | None,
        *,
        from_token: RoomToken | None,
        to_token: RoomToken | None,
        direction: Literal["f", "b"],
        limit: int,
        event_filter: RoomEventFilter,
        server_admin: bool = False,
    ) -> dict[str, Any]:
        access = await self.access(room_id, user_id, server_admin=server_admin)
        limit = max(0, min(limit, MAX_LIMIT))
        if event_filter.limit is not None:
            limit = min(limit, event_filter.limit)
        if from_token is not None:
            start = from_token.stream
        elif direction == "b":
            start = await self._stores.events.get_current_stream_position()
        else:
            start = FAR_PAST
        stop = to_token.stream if to_token is not None else None
        if access.cap is not None:
            if direction == "b":
                start = min(start, access.cap)
            else:
                stop = access.cap if stop is None else min(stop, access.cap)
        body: dict[str, Any] = {"start": RoomToken(start).encode(), "chunk": []}
        if limit == 0:
            body["end"] = body["start"]
            return body
        events, pos, exhausted = await self._paginate(
            room_id, user_id, access, start, stop, direction, limit, event_filter
        )
        if direction == "b" and exhausted and len(events) < limit and stop is None:
            events, pos, exhausted = await self._paginate_with_backfill(
                room_id, user_id, access, events, pos, limit, event_filter
            )
        bundles = await self.bundle(events, user_id, access.cap)
        body["chunk"] = await self.serialize(events, user_id, device_id, bundles=bundles)
        # No `end` once the room has nothing more that way (spec); forwards, a non-empty
        # page keeps its `end` so clients can resume when new events arrive.
        if not exhausted or (events and direction == "f"):
            body["end"] = RoomToken(pos).encode()
        if event_filter.lazy_load_members and events:
            body["state"] = await self._member_state(events, user_id, device_id)
        return body

    async def _paginate_with_backfill(
        self,
        room_id: str,
        user_id: str,
        access: Access,
        events: list[Event],
        pos: int,
        limit: int,
        event_filter: RoomEventFilter,
    ) -> tuple[list[Event], int, bool]:
        """Backwards pagination ran out of local events: ask other servers in the room
        for older history (backfill) and keep paginating from where we stopped, since
        backfilled events get stream orderings below everything we hold."""
        exhausted = True
        for _ in range(MAX_BACKFILL_ROUNDS):
            if self._backfill is None or not exhausted or len(events) >= limit:
                break
            try:
                added = await self._backfill.backfill(room_id, limit)
            except Exception:  # a remote's failure must not fail the local read
                log.exception("backfill of %s failed", room_id)
                added = 0
            if added <= 0:
                break
            more, pos, exhausted = await self._paginate(
                room_id, user_id, access, pos, None, "b", limit - len(events), event_filter
            )
            events = [*events, *more]
        return events, pos, exhausted

    async def _member_state(
        self, events: Sequence[Event], user_id: str, device_id: str | None
    ) -> list[dict[str, Any]]:
        """Member events of the senders of `events` (lazy-loaded members)."""
        newest = max(events, key=lambda e: e.depth)
        state = await self._stores.state.read_state_ids_for_event(newest.event_id) or {}
        senders = sorted({e.sender for e in events})
        ids = [state[("m.room.member", s)] for s in senders if ("m.room.member", s) in state]
        loaded = await self._stores.events.get_events(ids)
        return await self.serialize([loaded[i] for i in ids if i in loaded], user_id, device_id)

    async def context(
        self,
        room_id: str,
        user_id: str,
        device_id: str | None,
        event_id: str,
        *,
        limit: int,
        event_filter: RoomEventFilter,
        server_admin: bool = False,
    ) -> dict[str, Any]:
        access = await self.access(room_id, user_id, server_admin=server_admin)
        event, so = await self._room_event(room_id, event_id)
        if access.cap is not None and so > access.cap:
            raise not_found("Event not found.")
        shown = await self._visible([event], user_id, access)
        if not shown:
            raise not_found("Event not found.")
        event = shown[0]
        limit = max(0, min(limit, MAX_LIMIT))
        if event_filter.limit is not None:
            limit = min(limit, event_filter.limit)
        before_limit = limit // 2
        after_limit = limit - before_limit
        before, start, _ = (
            await self._paginate(
                room_id, user_id, access, so - 1, None, "b", before_limit, event_filter
            )
            if before_limit
            else ([], so - 1, False)
        )
        after, end, _ = (
            await self._paginate(
                room_id, user_id, access, so, access.cap, "f", after_limit, event_filter
            )
            if after_limit
            else ([], so, False)
        )
        state_ids = await self._stores.state.read_state_ids_for_event(event_id) or {}
        if event_filter.lazy_load_members:
            senders = {e.sender for e in (*before, event, *after)}
            state_ids = {
                k: v for k, v in state_ids.items() if k[0] != "m.room.member" or k[1] in senders
            }
        state_events = await self._stores.events.get_events(state_ids.values())
        state = [state_events[e] for e in state_ids.values() if e in state_events]
        bundles = await self.bundle([*before, event, *after], user_id, access.cap)
        (formatted,) = await self.serialize([event], user_id, device_id, bundles=bundles)
        return {
            "start": RoomToken(start).encode(),
            "end": RoomToken(end).encode(),
            "events_before": await self.serialize(before, user_id, device_id, bundles=bundles),
            "event": formatted,
            "events_after": await self.serialize(after, user_id, device_id, bundles=bundles),
            "state": await self.serialize(state, user_id, device_id, prev_state=False),
        }

    async def joined_timelines(
        self,
        user_id: str,
        device_id: str | None,
        wanted: dict[str, tuple[int, int | None, int]],
        extra: Sequence[Event] = (),
    ) -> tuple[dict[str, tuple[list[dict[str, Any]], int | None]], list[dict[str, Any]]]:
        """The newest visible events of several rooms the user is JOINED to (the caller
        knows), for sliding sync: `wanted` maps room -> (from stream, stop stream or
        None, limit). Returns room -> (client events oldest first, the stream position
        to paginate back from when more events lie before them, else None), and `extra`
        (state events) serialised in the same batch: aggregations, redactions and
        transaction IDs are fetched once for the whole response, not once per room."""
        rows = await self._stores.current_state.memberships_snapshot(user_id)  # by room ID
        pages: dict[str, tuple[list[Event], int | None]] = {}
        for room_id, (start, stop, limit) in wanted.items():
            i = bisect_left(rows, room_id, key=_room_of)
            joined_at = (
                rows[i].stream_ordering
                if i < len(rows) and rows[i].room_id == room_id and rows[i].membership == "join"
                else None
            )
            joined = Access("join", None, None, False, joined_at=joined_at)
            events, pos, exhausted = await self._paginate(
                room_id, user_id, joined, start, stop, "b", limit, RoomEventFilter()
            )
            pages[room_id] = (list(reversed(events)), None if exhausted else pos)
        every = [e for events, _ in pages.values() for e in events]
        bundles = await self.bundle(every, user_id)
        formatted = await self.serialize([*every, *extra], user_id, device_id, bundles=bundles)
        by_id = dict(zip([e.event_id for e in every], formatted, strict=False))
        out = {
            room_id: ([by_id[e.event_id] for e in events], more)
            for room_id, (events, more) in pages.items()
        }
        return out, formatted[len(every) :]

    async def event_stream(
        self, user_id: str, device_id: str | None, after: int, upto: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        """The legacy global `/events` stream: events of the rooms the user is joined to
        with after < stream ordering <= upto, oldest first, visible to the user, at
        most `limit`; and the position the answer covers (`upto` unless cut short)."""
        rooms = await self._stores.current_state.get_rooms_for_user(user_id)
        found = [
            t
            for t in await self._stores.events.get_events_after(after, rooms, limit)
            if t.stream_ordering <= upto
        ]
        end = found[-1].stream_ordering if len(found) >= limit else upto
        joined = Access("join", None, None, False)
        by_room: dict[str, list[Event]] = {}
        for t in found:
            by_room.setdefault(t.event.room_id, []).append(t.event)
        visible: set[str] = set()
        for room_events in by_room.values():
            shown = await self._visible(room_events, user_id, joined)
            visible.update(e.event_id for e in shown)
        events = [t.event for t in found if t.event.event_id in visible]
        return await self.serialize(events, user_id, device_id), end

    async def around(
        self,
        room_id: str,
        user_id: str,
        device_id: str | None,
        event_id: str,
        before_limit: int,
        after_limit: int,
    ) -> dict[str, Any]:
        """Search results' `context`: up to before/after_limit visible events either side
        of an event the caller already showed the user, with pagination tokens."""
        access = await self.access(room_id, user_id)
        _event, so = await self._room_event(room_id, event_id)
        no_filter = RoomEventFilter()
        before_limit = max(0, min(before_limit, MAX_LIMIT))
        after_limit = max(0, min(after_limit, MAX_LIMIT))
        before, start, _ = (
            await self._paginate(
                room_id, user_id, access, so - 1, None, "b", before_limit, no_filter
            )
            if before_limit
            else ([], so - 1, False)
        )
        after, end, _ = (
            await self._paginate(
                room_id, user_id, access, so, access.cap, "f", after_limit, no_filter
            )
            if after_limit
            else ([], so, False)
        )
        return {
            "start": RoomToken(start).encode(),
            "end": RoomToken(end).encode(),
            "events_before": await self.serialize(before, user_id, device_id),
            "events_after": await self.serialize(after, user_id, device_id),
        }

    async def timestamp_to_event(
        self,
        room_id: str,
        user_id: str,
        ts: int,
        direction: Literal["f", "b"],
        *,
        server_admin: bool = False,
    ) -> dict[str, Any]:
        await self.access(room_id, user_id, server_admin=server_admin)
        found = await self._read.event_closest_to_ts(room_id, ts, direction)
        if found is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Unable to find event from {ts} in {direction}")
        return {"event_id": found[0], "origin_server_ts": found[1]}


def _room_of(row: MembershipInfo) -> str:
    return row.room_id
