"""One room of a sliding sync response: its required state, timeline, counts, heroes.

`required_state` selection follows MSC4186: `[type, state_key]` pairs where `*` is a
wildcard, `$ME` the user, and `["m.room.member", "$LAZY"]` the members the timeline
involves (senders, and the targets of its member events), as Synapse. The timeline comes from the same reader as /messages (history
visibility, redactions, bundled aggregations) so `prev_batch` works there unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from homeserver.events import Event
from homeserver.rooms.membership import MembershipService
from homeserver.rooms.pagination import RoomToken
from homeserver.rooms.reader import RoomReader
from homeserver.storage import Stores
from homeserver.storage.push import PushStore

from .request import RoomConfig

MAX_HEROES = 5


@dataclass(frozen=True)
class JoinedJob:
    """One joined room to put in a response, and how."""

    room_id: str
    config: RoomConfig
    since_events: int | None  # None: in full
    is_dm: bool
    bump_stamp: int
    state: dict[tuple[str, str], str] | None = None  # prefetched current state
    members: dict[str, str] | None = None  # prefetched memberships
    counts_changed: bool = False  # sent even without new events (its unread counts moved)
    # The timeline limit grew since the room was sent: its latest `timeline_limit`
    # events whatever the position (flagged `unstable_expanded_timeline`).
    expanded: bool = False
    # Members already sent on this connection for this room ($LAZY): not sent again.
    lazy_sent: frozenset[str] = frozenset()


def wanted_state(
    keys: list[tuple[str, str]], config: RoomConfig, user_id: str, lazy_members: set[str]
) -> list[tuple[str, str]]:
    """The state keys of `keys` (the room's current state) that `config` asks for."""
    exact: set[tuple[str, str]] = set()
    all_of_type: set[str] = set()
    any_type_keys: set[str] = set()
    everything = False
    for event_type, state_key in config.required_state:
        if state_key == "$ME":
            state_key = user_id
        if event_type == "*" and state_key == "*":
            everything = True
        elif event_type == "*":
            any_type_keys.add(state_key)
        elif state_key == "*":
            all_of_type.add(event_type)
        elif state_key == "$LAZY" and event_type == "m.room.member":
            exact.update(("m.room.member", u) for u in lazy_members)
        else:
            exact.add((event_type, state_key))
    if everything:
        return list(keys)
    return [k for k in keys if k in exact or k[0] in all_of_type or k[1] in any_type_keys]


class RoomBuilder:
    def __init__(
        self,
        stores: Stores,
        reader: RoomReader,
        push_store: PushStore,
        membership: MembershipService,
    ) -> None:
        self._stores = stores
        self._reader = reader
        self._push = push_store
        self._membership = membership

    async def prefetch(
        self, room_ids: list[str]
    ) -> tuple[dict[str, dict[tuple[str, str], str]], dict[str, dict[str, str]]]:
        """The current state maps and memberships of the rooms a response builds, in
        two queries (not two per room)."""
        cs = self._stores.current_state
        return await cs.get_current_state_ids_for_rooms(room_ids), await cs.get_members_for_rooms(
            room_ids
        )

    async def _state_events(
        self, room_id: str, keys: list[tuple[str, str]], state: dict[tuple[str, str], str]
    ) -> list[Event]:
        loaded = await self._stores.events.get_events([state[k] for k in keys])
        return [loaded[state[k]] for k in keys if state[k] in loaded]

    async def joined_rooms(
        self,
        user_id: str,
        device_id: str | None,
        jobs: list[JoinedJob],
        now_events: int,
        lazy_out: dict[str, set[str]] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Entries for joined rooms: a job with `since_events` None is sent in full
        (`initial`); otherwise only what happened after it, and nothing when nothing
        did. Timelines and state of every room are read and serialised in batches."""
        if not jobs:
            return {}
        wanted = {
            j.room_id: (
                now_events,
                None if j.expanded else j.since_events,
                # Incremental with no timeline asked for: one event tells if it moved.
                j.config.timeline_limit
                if j.since_events is None
                else max(j.config.timeline_limit, 1),
            )
            for j in jobs
            if j.config.timeline_limit or j.since_events is not None
        }
        pages, _ = await self._reader.joined_timelines(user_id, device_id, wanted)
        rooms: dict[str, dict[str, Any]] = {}
        state_wanted: dict[str, list[str]] = {}
        for job in jobs:
            events, more = pages.get(job.room_id, ([], None))
            if (
                job.since_events is not None
                and not events
                and not job.counts_changed
                and not job.expanded
            ):
                continue  # nothing new
            timeline = events[-job.config.timeline_limit :] if job.config.timeline_limit else []
            state = job.state
            if state is None:
                state = await self._stores.current_state.get_current_state_ids(job.room_id)
            involved = {e["sender"] for e in timeline} | {
                e["state_key"]
                for e in timeline
                if e["type"] == "m.room.member" and isinstance(e.get("state_key"), str)
            }
            keys = wanted_state(list(state), job.config, user_id, involved)
            if job.since_events is not None:  # only state that changed in the new events
                changed = {
                    (e["type"], e["state_key"])
                    for e in timeline
                    if isinstance(e.get("state_key"), str)
                }
                # The members of the timeline's senders ($LAZY) come with it unless
                # this connection has them already (a member who joined long ago and
                # speaks now was never sent).
                keys = [
                    k
                    for k in keys
                    if k in changed
                    or (k[0] == "m.room.member" and k[1] in involved and k[1] not in job.lazy_sent)
                ]
            if lazy_out is not None:
                lazy_out[job.room_id] = {k[1] for k in keys if k[0] == "m.room.member"} | {
                    e["state_key"]
                    for e in timeline
                    if e["type"] == "m.room.member" and isinstance(e.get("state_key"), str)
                }
            state_wanted[job.room_id] = [state[k] for k in keys]
            room: dict[str, Any] = {
                "timeline": timeline,
                "bump_stamp": job.bump_stamp,
                "is_dm": job.is_dm,
                "limited": bool(timeline) and more is not None,
                "num_live": len(timeline) if job.since_events is not None else 0,
            }
            if job.since_events is None:
                room["initial"] = True
            if job.expanded:
                room["unstable_expanded_timeline"] = True
                room["num_live"] = 0  # the position bounds nothing here
            if timeline and more is not None:
                room["prev_batch"] = RoomToken(more).encode()
            members = job.members
            if members is None:
                members = await self._stores.current_state.get_members(job.room_id)
            # Name, avatar, counts and heroes: in full the first time, afterwards only
            # when the new events changed them (Synapse's rule).
            touched = {e["type"] for e in timeline if isinstance(e.get("state_key"), str)}
            await self._describe(
                room, job.room_id, user_id, state, members, job.since_events is None, touched
            )
            counts = await self._push.get_current_unread_counts(user_id, job.room_id)
            room["notification_count"] = sum(c.notifications for c in counts.values())
            room["highlight_count"] = sum(c.highlights for c in counts.values())
            rooms[job.room_id] = room
        # Every room's required state, serialised in one batch.
        loaded = await self._stores.events.get_events(
            [eid for ids in state_wanted.values() for eid in ids]
        )
        flat = [(r, loaded[eid]) for r, ids in state_wanted.items() for eid in ids if eid in loaded]
        formatted = await self._reader.serialize(
            [e for _, e in flat], user_id, device_id, prev_state=False
        )
        for room_id in rooms:
            rooms[room_id]["required_state"] = []
        for (room_id, _), item in zip(flat, formatted, strict=True):
            rooms[room_id]["required_state"].append(item)
        return rooms

    async def _describe(
        self,
        room: dict[str, Any],
        room_id: str,
        user_id: str,
        state: dict[tuple[str, str], str],
        members: dict[str, str],
        initial: bool = True,
        touched: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        """name, avatar, heroes and member counts (on an incremental entry, only those
        whose state events are among `touched` types)."""
        ids = [state[k] for k in (("m.room.name", ""), ("m.room.avatar", "")) if k in state]
        loaded = await self._stores.events.get_events(ids)
        name_id = state.get(("m.room.name", ""))
        name = loaded[name_id].content.get("name") if name_id in loaded else None
        has_name = isinstance(name, str) and bool(name)
        if has_name and (initial or "m.room.name" in touched):
            room["name"] = name
        avatar_id = state.get(("m.room.avatar", ""))
        if avatar_id in loaded and (initial or "m.room.avatar" in touched):
            url = loaded[avatar_id].content.get("url")
            room["avatar"] = url if isinstance(url, str) and url else None
        if not initial and "m.room.member" not in touched:
            return
        room["joined_count"] = sum(1 for m in members.values() if m == "join")
        room["invited_count"] = sum(1 for m in members.values() if m == "invite")
        if not has_name:
            others = sorted(
                u for u, m in members.items() if u != user_id and m in ("join", "invite")
            )[:MAX_HEROES]
            member_ids = [
                state[("m.room.member", u)] for u in others if ("m.room.member", u) in state
            ]
            events = await self._stores.events.get_events(member_ids)
            heroes = []
            for u in others:
                hero: dict[str, Any] = {"user_id": u}
                event = events.get(state.get(("m.room.member", u), ""))
                if event is not None:
                    for field in ("displayname", "avatar_url"):
                        value = event.content.get(field)
                        if isinstance(value, str):
                            hero[field] = value
                heroes.append(hero)
            room["heroes"] = heroes

    async def invited_room(
        self, room_id: str, user_id: str, bump_stamp: int, is_dm: bool, membership: str
    ) -> dict[str, Any]:
        """An invite's or a knock's stripped state (the event's own, else the room's)."""
        member_id = await self._stores.current_state.get_current_state_event_id(
            room_id, "m.room.member", user_id
        )
        invite = await self._stores.events.get_event(member_id) if member_id else None
        stripped: list[dict[str, Any]] = []
        if invite is not None:
            unsigned = invite.pdu.get("unsigned")
            key = "knock_room_state" if membership == "knock" else "invite_room_state"
            carried = unsigned.get(key) if isinstance(unsigned, dict) else None
            if isinstance(carried, list) and carried:
                stripped = [s for s in carried if isinstance(s, dict)]
            else:
                inviter = invite.sender if membership == "invite" else None
                stripped = await self._membership.stripped_state(room_id, inviter=inviter)
            stripped = [
                s
                for s in stripped
                if not (s.get("type") == "m.room.member" and s.get("state_key") == user_id)
            ]
            stripped.append(
                {
                    "type": invite.type,
                    "state_key": invite.state_key,
                    "sender": invite.sender,
                    "content": invite.content,
                    "event_id": invite.event_id,
                    "origin_server_ts": invite.origin_server_ts,
                }
            )
        room: dict[str, Any] = {
            "initial": True,
            "invite_state": stripped,
            "bump_stamp": bump_stamp,
            "is_dm": is_dm or bool(invite is not None and invite.content.get("is_direct")),
        }
        for s in stripped:
            if s.get("type") == "m.room.name" and isinstance(s.get("content", {}).get("name"), str):
                room["name"] = s["content"]["name"]
            if s.get("type") == "m.room.avatar" and isinstance(
                s.get("content", {}).get("url"), str
            ):
                room["avatar"] = s["content"]["url"]
        return room
