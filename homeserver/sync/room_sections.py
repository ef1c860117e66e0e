"""The per-room part of a /sync response: timeline, state sections and their formatting.

`SyncBuilder` decides which rooms a response mentions; this module works out, per room,
which events the timeline carries and which state the client still lacks, then formats
them (redactions, transaction IDs, `prev_content`, aggregations, lazy-loaded members,
ephemeral events, summaries) in batched store calls for the whole response.

State sections follow the spec: `state` is the state at the start of the timeline,
expressed as "state at the end minus what the client already knows (state at `since`)
minus what the timeline itself carries"; with `use_state_after` it is `state_after`,
the state at the end of the timeline, timeline state included.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Any

from homeserver.ephemeral.typing import TypingService
from homeserver.events import Event
from homeserver.rooms.client_events import format_client_event, strip_event
from homeserver.rooms.membership import MembershipService
from homeserver.rooms.pagination import RoomToken
from homeserver.rooms.ports import Aggregations
from homeserver.rooms.visibility import filter_events_for_user
from homeserver.storage import MembershipInfo, Stores, TimelineEvent
from homeserver.storage.cache import LruCache
from homeserver.storage.room_directory import RoomReadStore
from homeserver.storage.sync_queries import SyncQueryStore
from homeserver.sync.activity import RoomActivity

from .filters import SyncFilter, apply_event_fields
from .request import SyncRequest
from .tokens import StreamToken

StateKey = tuple[str, str]
MAX_HEROES = 5
# Pages of events read to fill a filtered timeline before giving up (then `limited`).
MAX_FILTERED_PAGES = 5


@dataclass
class RoomWork:
    """One room's timeline and state, before formatting."""

    room_id: str
    membership: str
    timeline: list[TimelineEvent]
    limited: bool
    state_ids: list[str]
    full: bool
    event_ids_in_timeline: set[str] = field(default_factory=set)


class RoomSections:
    """Computes and formats the `rooms.join` / `rooms.leave` / invite and knock entries.

    It remembers, per (user, device), which lazily-loaded member events were already
    sent, so incremental syncs do not repeat them.
    """

    def __init__(
        self,
        stores: Stores,
        queries: SyncQueryStore,
        room_reads: RoomReadStore,
        membership: MembershipService,
        typing: TypingService,
        activity: RoomActivity | None = None,
        aggregations: Aggregations | None = None,
    ) -> None:
        self._stores = stores
        self._queries = queries
        self._room_reads = room_reads
        self._membership = membership
        self._typing = typing
        # (user, device) -> {(room, member): event_id} lazily-loaded members already sent.
        self._sent_members: LruCache[tuple[str, str], dict[tuple[str, str], str]] = LruCache(
            10_000, "lazy_loaded_members"
        )
        # Recent room activity, so a room's new events come from memory when they can.
        self.activity = activity
        # unsigned["m.relations"] for timeline events.
        self.aggregations = aggregations

    async def room_work(
        self,
        m: MembershipInfo,
        req: SyncRequest,
        since: StreamToken | None,
        now: StreamToken,
        room_full: bool,
        has_events: bool,
    ) -> RoomWork:
        """The timeline and state event IDs of one room (joined or left).

        The state is `state` (up to the start of the timeline: timeline events are left
        out) or, with `use_state_after`, `state_after` (up to its end, timeline included).
        """
        flt = req.filter
        after = req.use_state_after
        room_id = m.room_id
        limit = flt.timeline_limit
        upper = now.events if m.membership == "join" else min(m.stream_ordering, now.events)
        lower = None if room_full or since is None else since.events
        fetched: list[TimelineEvent] = []
        gave_up = False
        if (has_events or room_full) and flt.timeline.filters_events:
            fetched, gave_up = await self._filtered_recent(room_id, upper, lower, limit + 1, flt)
        elif has_events or room_full:
            recent = (
                self.activity.room_events_between(room_id, upper, lower, limit + 1)
                if self.activity is not None and lower is not None
                else None
            )
            fetched = (
                recent
                if recent is not None
                else await self._stores.events.get_room_events_between(
                    room_id, upper, lower, limit + 1, "b"
                )
            )
        limited = len(fetched) > limit or gave_up
        timeline = list(reversed(fetched[:limit]))
        if self._stores.retention.enabled and timeline:
            # Messages the room's retention policy expired are not served (the state
            # below still comes from the newest event fetched).
            live = await self._stores.retention.drop_expired([t.event for t in timeline])
            if len(live) < len(timeline):
                kept = {e.event_id for e in live}
                timeline = [t for t in timeline if t.event.event_id in kept]
        joined_before = (
            m.membership == "join"
            and bool(timeline)
            and (timeline[0].stream_ordering >= m.stream_ordering)
        )
        if room_full and timeline and not joined_before:
            # A room new to the client: its timeline may reach back before the user
            # joined, so history visibility decides (events after the join all pass).
            visible = {
                e.event_id
                for e in await filter_events_for_user(
                    self._stores, m.user_id, [t.event for t in timeline]
                )
            }
            if len(visible) < len(timeline):
                timeline = [t for t in timeline if t.event.event_id in visible]
                limited = True
        end_event = fetched[0].event.event_id if fetched else None
        # The state at the end of the range: after the newest event at or below `upper`.
        if end_event is None and (room_full or m.membership != "join"):
            before = await self._stores.events.get_room_events_between(room_id, upper, None, 1, "b")
            end_event = before[0].event.event_id if before else None
        state_ids: list[str] = []
        timeline_has_state = any(t.event.state_key is not None for t in timeline)
        wants_state = room_full or limited or flt.state.lazy_load_members
        if end_event is not None and (wants_state or (after and timeline_has_state)):
            end_state = await self._stores.state.read_state_ids_for_event(end_event) or {}
            known: Mapping[StateKey, str] = {}
            if not room_full and since is not None:
                if not limited and not (after and timeline_has_state):
                    known = end_state  # the timeline carries every change
                else:
                    prior = await self._stores.events.get_room_events_between(
                        room_id, since.events, None, 1, "b"
                    )
                    if prior:
                        known = (
                            await self._stores.state.read_state_ids_for_event(
                                prior[0].event.event_id
                            )
                            or {}
                        )
            # `state_after` keeps the timeline's state events: clients then read state
            # from that section alone.
            in_timeline = set() if after else {t.event.event_id for t in timeline}
            # Nothing to diff when the timeline carries every change (a lazy-loading
            # client's every incremental sync): comparing the whole state with itself
            # would cost O(room members) per sync, a fan-out's largest cost.
            wanted: dict[StateKey, str] = (
                {}
                if known is end_state
                else {
                    k: v for k, v in end_state.items() if known.get(k) != v and v not in in_timeline
                }
            )
            if flt.state.lazy_load_members:
                if room_full or not limited:
                    # Otherwise (a gap), every membership that changed in it is kept,
                    # old leaves included, as Synapse does: the client missed them.
                    wanted = {k: v for k, v in wanted.items() if k[0] != "m.room.member"}
                senders = {t.event.sender for t in timeline}
                if room_full:
                    senders.add(m.user_id)
                if after:  # members whose membership the timeline changed
                    senders.update(
                        t.event.state_key
                        for t in timeline
                        if t.event.type == "m.room.member" and t.event.state_key
                    )
                for sender in senders:
                    member = end_state.get(("m.room.member", sender))
                    if member is not None and member not in in_timeline:
                        wanted[("m.room.member", sender)] = member
            state_ids = list(wanted.values())
        return RoomWork(room_id, m.membership, timeline, limited, state_ids, room_full)

    async def _filtered_recent(
        self, room_id: str, upper: int, lower: int | None, want: int, flt: SyncFilter
    ) -> tuple[list[TimelineEvent], bool]:
        """The newest `want` events the timeline filter lets through (newest first):
        a filtered timeline still holds `limit` events when older ones match, as
        Synapse's. Bounded: a few pages, then what was found, with True when the search
        stopped before the range's start (the timeline is then `limited`)."""
        found: list[TimelineEvent] = []
        page = max(want * 2, 20)
        cursor = upper
        for _ in range(MAX_FILTERED_PAGES):
            batch = await self._stores.events.get_room_events_between(
                room_id, cursor, lower, page, "b"
            )
            found += [
                t
                for t in batch
                if flt.timeline.allows(t.event.type, t.event.sender, t.event.content)
            ]
            if len(found) >= want or len(batch) < page:
                return found[:want], False
            cursor = batch[-1].stream_ordering
        return found, True

    async def invite_state(
        self, m: MembershipInfo, ignored: frozenset[str]
    ) -> list[dict[str, Any]] | None:
        """Stripped state for an invite or knock: the event's own, else the room's."""
        event = await self._stores.events.get_event(m.event_id)
        if event is None:
            return None
        if event.sender in ignored:
            return None
        unsigned = event.pdu.get("unsigned")
        carried = unsigned.get("invite_room_state") if isinstance(unsigned, dict) else None
        if m.membership == "knock" and isinstance(unsigned, dict):
            carried = unsigned.get("knock_room_state")
        if isinstance(carried, list) and carried:
            state = [s for s in carried if isinstance(s, dict)]
        else:
            inviter = event.sender if m.membership == "invite" else None
            state = await self._membership.stripped_state(m.room_id, inviter=inviter)
        state = [
            s
            for s in state
            if not (s.get("type") == "m.room.member" and s.get("state_key") == m.user_id)
        ]
        member = strip_event(event)
        member["event_id"] = event.event_id
        member["origin_server_ts"] = event.origin_server_ts
        return [*state, member]

    async def format_rooms(
        self,
        req: SyncRequest,
        works: list[RoomWork],
        ignored: frozenset[str],
        now_ms: int,
        since: StreamToken | None,
        now: StreamToken,
        receipts: dict[str, Any],
        room_account: dict[str, list[dict[str, Any]]],
    ) -> dict[str, dict[str, Any]]:
        """{"join": {room: section}, "leave": {...}} for the rooms of `works`; what each
        event needs (redactions, txn IDs, prev_content, aggregations) is fetched once for
        the whole response."""
        state_events = await self._stores.events.get_events([e for w in works for e in w.state_ids])
        fmt = await self._formatter(req, works, state_events, now_ms)
        summaries = await self._summaries(req.user_id, works)
        sent_key = (req.user_id, req.device_id or "")
        sent = self._sent_members.get(sent_key) if since is not None else None
        if sent is None:
            sent = {}
            self._sent_members.set(sent_key, sent)
        out: dict[str, dict[str, Any]] = {"join": {}, "leave": {}}
        for w in works:
            timeline = self._timeline_events(req, w, ignored)
            state = self._state_events(req, w, state_events, sent)
            section: dict[str, Any] = {
                "timeline": {"events": [fmt(t.event) for t in timeline], "limited": w.limited},
                ("state_after" if req.use_state_after else "state"): {
                    "events": [fmt(e) for e in state]
                },
                "account_data": {"events": room_account.get(w.room_id, [])},
            }
            if w.timeline:
                section["timeline"]["prev_batch"] = RoomToken(
                    w.timeline[0].stream_ordering - 1
                ).encode()
            elif w.full or w.limited:
                section["timeline"]["prev_batch"] = RoomToken(now.events).encode()
            if w.membership != "join":
                out["leave"][w.room_id] = section
                continue
            section["ephemeral"] = {"events": self._ephemeral(req, w, since, receipts)}
            if w.room_id in summaries:
                section["summary"] = summaries[w.room_id]
            empty = not (
                timeline
                or state
                or section["ephemeral"]["events"]
                or section["account_data"]["events"]
            )
            if w.full or not empty:
                out["join"][w.room_id] = section
        return out

    async def _formatter(
        self,
        req: SyncRequest,
        works: list[RoomWork],
        state_events: dict[str, Event],
        now_ms: int,
    ) -> Callable[[Event], dict[str, Any]]:
        """Formats one event as the request asks; the batched lookups are done here."""
        flt = req.filter
        timeline_events = [t.event for w in works for t in w.timeline]
        all_events = [*timeline_events, *state_events.values()]
        redactions = await self._stores.events.get_redaction_events(e.event_id for e in all_events)
        own = [e.event_id for e in timeline_events if e.sender == req.user_id]
        txn_ids = (
            await self._room_reads.get_txn_ids(req.user_id, req.device_id, own)
            if own and req.device_id
            else {}
        )
        replaced = await self._replaced_state(timeline_events)
        bundles: dict[str, dict[str, Any]] = {}
        if self.aggregations is not None and timeline_events and flt.event_format != "federation":
            # One batched call for every timeline of the response (state events get none).
            bundles = await self.aggregations(
                [e for e in timeline_events if e.state_key is None], req.user_id
            )

        def fmt(event: Event) -> dict[str, Any]:
            if flt.event_format == "federation":
                # The PDU as servers exchange it, plus what Synapse adds to it for
                # clients: the event ID (v3+ PDUs omit it) and `unsigned.age`.
                out = dict(event.pdu)
                out["event_id"] = event.event_id
                unsigned = out.get("unsigned")
                out["unsigned"] = {
                    **(unsigned if isinstance(unsigned, dict) else {}),
                    "age": max(0, now_ms - event.origin_server_ts),
                }
            else:
                prev = replaced.get(event.event_id)
                out = format_client_event(
                    event,
                    now_ms=now_ms,
                    redacted_because=redactions.get(event.event_id),
                    txn_id=txn_ids.get(event.event_id),
                    prev_content=prev.content if prev is not None else None,
                    replaces_state=prev.event_id if prev is not None else None,
                    prev_sender=prev.sender if prev is not None else None,
                )
                bundle = bundles.get(event.event_id)
                if bundle:
                    out.setdefault("unsigned", {})["m.relations"] = bundle
            if flt.event_fields is not None:
                out = apply_event_fields(out, flt.event_fields)
            return out

        return fmt

    @staticmethod
    def _timeline_events(
        req: SyncRequest, w: RoomWork, ignored: frozenset[str]
    ) -> list[TimelineEvent]:
        flt = req.filter
        if not flt.timeline.allows_room(w.room_id):
            return []
        return [
            t
            for t in w.timeline
            if t.event.sender not in ignored
            and flt.timeline.allows(t.event.type, t.event.sender, t.event.content)
        ]

    @staticmethod
    def _state_events(
        req: SyncRequest,
        w: RoomWork,
        loaded: dict[str, Event],
        sent: dict[tuple[str, str], str],
    ) -> list[Event]:
        """The room's state section after the filter; lazily-loaded members the device
        already has are left out (and the ones sent now remembered)."""
        flt = req.filter
        if not flt.state.allows_room(w.room_id):
            return []
        state: list[Event] = []
        for eid in w.state_ids:
            ev = loaded.get(eid)
            if ev is None or not flt.state.allows(ev.type, ev.sender, ev.content):
                continue
            if (
                ev.type == "m.room.member"
                and flt.state.lazy_load_members
                and not flt.state.include_redundant_members
                and not w.full
                and sent.get((w.room_id, ev.state_key or "")) == eid
            ):
                continue
            state.append(ev)
        if flt.state.lazy_load_members:
            for ev in state:
                if ev.type == "m.room.member":
                    sent[(w.room_id, ev.state_key or "")] = ev.event_id
        return state

    def _ephemeral(
        self, req: SyncRequest, w: RoomWork, since: StreamToken | None, receipts: dict[str, Any]
    ) -> list[dict[str, Any]]:
        flt = req.filter.ephemeral
        if not flt.allows_room(w.room_id):
            return []
        events: list[dict[str, Any]] = []
        typing_changed = (
            self._typing.room_position(w.room_id) > since.typing
            if since is not None and not w.full
            else bool(self._typing.typing_users(w.room_id))
        )
        if typing_changed and flt.allows_type("m.typing"):
            events.append(self._typing.event_for(w.room_id))
        if w.room_id in receipts and flt.allows_type("m.receipt"):
            events.append(receipts[w.room_id])
        return events

    async def _replaced_state(self, events: list[Event]) -> dict[str, Event]:
        """state event ID -> the state event it replaced (for `unsigned.prev_content`).

        The state before an event is the state after its first prev event: one batched
        group lookup, then cached state maps and events.
        """
        state_events = [e for e in events if e.state_key is not None and e.prev_event_ids]
        if not state_events:
            return {}
        groups = await self._stores.state.get_state_groups_for_events(
            [e.prev_event_ids[0] for e in state_events]
        )
        previous: dict[str, str] = {}
        for e in state_events:
            group = groups.get(e.prev_event_ids[0])
            if group is None:
                continue
            before = await self._stores.state.read_state_ids(group)
            old = before.get((e.type, e.state_key or ""))
            if old is not None and old != e.event_id:
                previous[e.event_id] = old
        found = await self._stores.events.get_events(previous.values())
        return {eid: found[old] for eid, old in previous.items() if old in found}

    async def _summaries(self, user_id: str, works: list[RoomWork]) -> dict[str, dict[str, Any]]:
        """Room summaries for joined rooms that are new to the client or saw member events."""
        rooms = [
            w.room_id
            for w in works
            if w.membership == "join"
            and (w.full or any(t.event.type == "m.room.member" for t in w.timeline))
        ]
        if not rooms:
            return {}
        members = await self._stores.current_state.get_summary_members(rooms)
        named = await self._named_rooms(rooms)
        # Heroes from any membership (left, banned) only for a room with nobody else
        # joined or invited: rare, and the only case that reads every member row.
        alone = [r for r in rooms if not any(u != user_id for group in members[r] for u in group)]
        everyone = await self._queries.members_of_rooms(alone) if alone else {}
        out: dict[str, dict[str, Any]] = {}
        for room_id in rooms:
            joined, invited = members[room_id]
            heroes = list(islice((u for u in chain(joined, invited) if u != user_id), MAX_HEROES))
            if not heroes:
                others = everyone.get(room_id, {})
                heroes = sorted(u for u in others if u != user_id)[:MAX_HEROES]
            summary: dict[str, Any] = {
                "m.joined_member_count": len(joined),
                "m.invited_member_count": len(invited),
            }
            if room_id not in named:
                # Heroes only name rooms that have no name or alias (as Synapse).
                summary["m.heroes"] = heroes
            out[room_id] = summary
        return out

    async def _named_rooms(self, rooms: list[str]) -> set[str]:
        """The rooms among `rooms` with a non-empty name or canonical alias."""
        ids = await self._queries.naming_event_ids(rooms)
        events = await self._stores.events.get_events([e for es in ids.values() for e in es])
        named = set()
        for room_id, event_ids in ids.items():
            for event_id in event_ids:
                event = events.get(event_id)
                if event is None:
                    continue
                key = "name" if event.type == "m.room.name" else "alias"
                if event.content.get(key):
                    named.add(room_id)
        return named
