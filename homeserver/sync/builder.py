"""Builds one /sync response from the stores and the per-user streams.

Cost model (the point of this module):
- incremental sync: one query for the user's memberships, one range query for "rooms
  with timeline events since the token" (events primary key), then per changed room
  only: its new events (room/stream index, at most limit+1) and, when the timeline is
  limited, two state-group lookups. Ephemeral data comes from memory (typing, presence)
  or one indexed query per stream (receipts, account data).
- initial sync: per room the last limit+1 events (index) and the state group of the
  newest one (state maps are cached), batched member/summary and receipt queries.

The per-room timeline and state computation and its formatting live in
`room_sections`; this module decides which rooms, account data, presence and extension
data a response carries.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from homeserver.ephemeral.account_data import AccountDataService
from homeserver.ephemeral.presence import PresenceService
from homeserver.ephemeral.receipts import ReceiptsService
from homeserver.ephemeral.typing import TypingService
from homeserver.rooms.membership import MembershipService
from homeserver.rooms.ports import Aggregations
from homeserver.storage import MembershipInfo, Stores
from homeserver.storage.room_directory import RoomReadStore
from homeserver.storage.sync_queries import SyncQueryStore
from homeserver.sync.activity import RoomActivity

from .extensions import SyncContext, SyncExtension
from .joined_rooms import JoinedRoomsCache
from .request import SyncRequest
from .room_sections import RoomSections, RoomWork
from .tokens import STREAMS, StreamToken

__all__ = ["SyncBuilder", "SyncRequest", "clamp", "is_empty"]

PUSH_RULES_TYPE = "m.push_rules"
# Above this many changed presence rows, who shares a room is worked out from the
# members of the user's rooms rather than from each row's user.
PRESENCE_ROWS_PER_USER_LOOKUP = 8


def clamp(since: StreamToken, now: StreamToken) -> StreamToken:
    """A token from before a restart may be ahead on in-memory streams (typing): cap it."""
    if not since.is_after(now):
        return since  # the usual case, on every sync
    return StreamToken(*(min(getattr(since, s), getattr(now, s)) for s in STREAMS))


def is_empty(response: dict[str, Any]) -> bool:
    """Whether a response carries nothing new (then a long-poll keeps waiting)."""
    rooms = response.get("rooms", {})
    if any(rooms.get(k) for k in ("join", "invite", "leave", "knock")):
        return False
    for key in ("presence", "account_data", "to_device"):
        if response.get(key, {}).get("events"):
            return False
    lists = response.get("device_lists", {})
    return not (lists.get("changed") or lists.get("left"))


class SyncBuilder:
    """Assembles /sync responses; per-room sections are delegated to `RoomSections`."""

    def __init__(
        self,
        stores: Stores,
        queries: SyncQueryStore,
        room_reads: RoomReadStore,
        joined: JoinedRoomsCache,
        membership: MembershipService,
        typing: TypingService,
        receipts: ReceiptsService,
        presence: PresenceService,
        account_data: AccountDataService,
        extensions: Sequence[SyncExtension],
        *,
        activity: RoomActivity | None = None,
        aggregations: Aggregations | None = None,
        push_rules: Callable[[str], Awaitable[dict[str, Any]]] | None = None,
        excluded_rooms: frozenset[str] = frozenset(),
    ) -> None:
        # exclude_rooms_from_sync (Synapse's): rooms no sync shows (a bot's busy room,
        # a bridge's control room), for every user.
        self._excluded = excluded_rooms
        self._stores = stores
        self._room_reads = room_reads
        self._queries = queries
        self._joined = joined
        self._typing = typing
        self._receipts = receipts
        self._presence = presence
        self._account_data = account_data
        self._extensions = list(extensions)
        # Recent room activity, so incremental syncs learn which rooms changed (and
        # their new events) without a query.
        self.activity = activity
        self._rooms = RoomSections(
            stores, queries, room_reads, membership, typing, activity, aggregations
        )
        # The user's push rules ({"global": ...}), sent as global account data
        # m.push_rules on initial sync and after every change (a change writes an
        # m.push_rules account data entry to move the stream).
        self.push_rules = push_rules

    # -- entry point ------------------------------------------------------------------

    async def build(self, req: SyncRequest, now: StreamToken) -> dict[str, Any]:
        """The response for `req`, covering exactly what happened up to `now` (every
        read below is bounded by it; see service.py for why that is enough)."""
        if req.since is None:
            return await self._build_initial(req, now)
        return await self._build_incremental(req, clamp(req.since, now), now)

    async def _build_initial(self, req: SyncRequest, now: StreamToken) -> dict[str, Any]:
        """Everything the user can see: each room's latest timeline and full state."""
        flt = req.filter
        memberships = await self._memberships(req, now)
        ignored = await self._account_data.ignored_users(req.user_id)
        global_account, room_account = await self._account_data_sections(req, None, now)
        joined_ids = [m.room_id for m in memberships if m.membership == "join"]
        receipts = await self._receipts.receipts_for_sync(
            req.user_id, joined_ids, None, now.receipts
        )
        works: list[RoomWork] = []
        invites: dict[str, Any] = {}
        knocks: dict[str, Any] = {}
        left: list[MembershipInfo] = []
        for m in memberships:
            if m.membership == "join":
                works.append(await self._rooms.room_work(m, req, None, now, True, False))
            elif m.membership in ("invite", "knock"):
                await self._stripped(m, ignored, invites, knocks)
            elif m.membership in ("leave", "ban") and flt.include_leave:
                left.append(m)
        for m in await self._not_forgotten(req.user_id, left):
            works.append(await self._rooms.room_work(m, req, None, now, True, True))
        return await self._assemble(
            req, None, now, memberships, works, invites, knocks, ignored,
            receipts, global_account, room_account,
        )  # fmt: skip

    async def _build_incremental(
        self, req: SyncRequest, since: StreamToken, now: StreamToken
    ) -> dict[str, Any]:
        """What changed in (since, now]: rooms with new events or a new membership,
        ephemeral data and account data (everything again with `full_state`)."""
        flt = req.filter
        full = req.full_state
        memberships = await self._memberships(req, now)
        ignored = await self._account_data.ignored_users(req.user_id)
        changed: dict[str, int] = {}
        if since.events < now.events:
            recent = (
                self.activity.rooms_changed_between(since.events, now.events)
                if self.activity is not None
                else None
            )
            if recent is None:
                recent = await self._queries.rooms_changed_between(since.events, now.events)
            changed = recent
        global_account, room_account = await self._account_data_sections(
            req, None if full else since, now
        )
        joined_ids = [m.room_id for m in memberships if m.membership == "join"]
        receipts = await self._receipts.receipts_for_sync(
            req.user_id, joined_ids, None if full else since.receipts, now.receipts
        )
        works: list[RoomWork] = []
        invites: dict[str, Any] = {}
        knocks: dict[str, Any] = {}
        left: list[MembershipInfo] = []
        for m in memberships:
            new_membership = m.stream_ordering > since.events
            if m.membership == "join":
                room_full = full or new_membership
                if room_full or m.room_id in changed:
                    works.append(
                        await self._rooms.room_work(
                            m, req, since, now, room_full, m.room_id in changed
                        )
                    )
                elif self._has_ephemeral(m.room_id, since, receipts, room_account):
                    works.append(RoomWork(m.room_id, "join", [], False, [], False))
            elif m.membership in ("invite", "knock"):
                if full or new_membership:
                    await self._stripped(m, ignored, invites, knocks)
            elif m.membership in ("leave", "ban") and (
                new_membership or full and flt.include_leave
            ):
                left.append(m)
        for m in await self._not_forgotten(req.user_id, left):
            room_full = full or m.stream_ordering <= since.events
            works.append(await self._rooms.room_work(m, req, since, now, room_full, True))
        return await self._assemble(
            req, since, now, memberships, works, invites, knocks, ignored,
            receipts, global_account, room_account,
        )  # fmt: skip

    async def _not_forgotten(
        self, user_id: str, left: list[MembershipInfo]
    ) -> list[MembershipInfo]:
        """The rooms left or banned from that the user has not forgotten (a forgotten
        room is in no sync, as in Synapse); one read, only when a sync would show one."""
        if not left:
            return left
        forgotten = await self._room_reads.get_forgotten_rooms(user_id)
        return [m for m in left if m.room_id not in forgotten]

    async def _memberships(self, req: SyncRequest, now: StreamToken) -> list[MembershipInfo]:
        """The user's memberships the filter allows, as of `now`."""
        return [
            m
            for m in await self._stores.current_state.get_memberships_for_user(req.user_id)
            if req.filter.allows_room(m.room_id)
            and m.stream_ordering <= now.events
            and m.room_id not in self._excluded
        ]

    async def _stripped(
        self,
        m: MembershipInfo,
        ignored: frozenset[str],
        invites: dict[str, Any],
        knocks: dict[str, Any],
    ) -> None:
        """An invite's or a knock's stripped state (invites from ignored users dropped,
        and every invite while the user blocks invites: v1.18 invite permission)."""
        if m.membership == "invite":
            if await self._account_data.invites_blocked(m.user_id):
                return
            entry = await self._rooms.invite_state(m, ignored)
            if entry is not None:
                invites[m.room_id] = {"invite_state": {"events": entry}}
        else:
            entry = await self._rooms.invite_state(m, frozenset())
            if entry is not None:
                knocks[m.room_id] = {"knock_state": {"events": entry}}

    async def _account_data_sections(
        self, req: SyncRequest, since: StreamToken | None, now: StreamToken
    ) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """(global account data, room -> room account data) changed in (since, now];
        all of it when `since` is None. m.push_rules is the live ruleset."""
        flt = req.filter
        account = []
        if since is None or since.account_data < now.account_data:
            account = await self._account_data.changes_since(
                req.user_id, 0 if since is None else since.account_data
            )
        room_account: dict[str, list[dict[str, Any]]] = {}
        global_account: list[dict[str, Any]] = []
        for entry in account:
            if entry.stream_id > now.account_data:
                continue
            item = {"type": entry.data_type, "content": entry.content}
            if entry.room_id:
                if flt.room_account_data.allows_type(entry.data_type):
                    room_account.setdefault(entry.room_id, []).append(item)
            elif flt.account_data.allows_type(entry.data_type):
                global_account.append(item)
        if self.push_rules is not None and flt.account_data.allows_type(PUSH_RULES_TYPE):
            changed_rules = any(i["type"] == PUSH_RULES_TYPE for i in global_account)
            if since is None or changed_rules:
                global_account = [i for i in global_account if i["type"] != PUSH_RULES_TYPE]
                content = await self.push_rules(req.user_id)
                global_account.append({"type": PUSH_RULES_TYPE, "content": content})
        return global_account, room_account

    async def _assemble(
        self,
        req: SyncRequest,
        since: StreamToken | None,
        now: StreamToken,
        memberships: list[MembershipInfo],
        works: list[RoomWork],
        invites: dict[str, Any],
        knocks: dict[str, Any],
        ignored: frozenset[str],
        receipts: dict[str, Any],
        global_account: list[dict[str, Any]],
        room_account: dict[str, list[dict[str, Any]]],
    ) -> dict[str, Any]:
        """Format the rooms and add presence, account data and the extensions' parts."""
        rooms_out = await self._rooms.format_rooms(
            req, works, ignored, int(time.time() * 1000), since, now, receipts, room_account
        )
        response: dict[str, Any] = {
            "next_batch": now.encode(),
            "rooms": {
                "join": rooms_out.get("join", {}),
                "invite": invites,
                "leave": rooms_out.get("leave", {}),
                "knock": knocks,
            },
            "presence": {"events": await self._presence_events(req, since, now, memberships)},
            "account_data": {"events": global_account},
        }
        joined_ids = [m.room_id for m in memberships if m.membership == "join"]
        await self._run_extensions(req, since, now, joined_ids, response)
        return response

    # -- rooms ------------------------------------------------------------------------

    def _has_ephemeral(
        self,
        room_id: str,
        since: StreamToken | None,
        receipts: dict[str, Any],
        room_account: dict[str, list[dict[str, Any]]],
    ) -> bool:
        if room_id in receipts or room_id in room_account:
            return True
        return since is not None and self._typing.room_position(room_id) > since.typing

    # -- presence and extensions ------------------------------------------------------

    async def _presence_events(
        self,
        req: SyncRequest,
        since: StreamToken | None,
        now: StreamToken,
        memberships: list[MembershipInfo],
    ) -> list[dict[str, Any]]:
        flt = req.filter.presence
        if flt.allows_nothing or not flt.allows_type("m.presence"):
            return []
        rows = self._presence.changed_since(
            None if since is None or req.full_state else since.presence, now.presence
        )
        if not rows:
            return []
        mine = {m.room_id for m in memberships if m.membership == "join"}
        # Presence goes to users who share a room. Few rows: look up each user's rooms;
        # many (an initial sync, or everyone in a big room coming online): the members
        # of my rooms, from the per-room cache, instead of a query per row.
        sharing: set[str] | None = None
        if len(rows) > PRESENCE_ROWS_PER_USER_LOOKUP:
            sharing = set()
            for room_id in mine:
                sharing.update(await self._stores.current_state.get_users_in_room(room_id))
        events = []
        for row in rows:
            if row.user_id != req.user_id:
                if sharing is not None:
                    if row.user_id not in sharing:
                        continue
                else:
                    theirs = self._joined.peek(row.user_id)
                    if theirs is None:
                        theirs = await self._joined.get(row.user_id)
                    if theirs.isdisjoint(mine):
                        continue
            if not flt.allows("m.presence", row.user_id):
                continue
            events.append(
                {"type": "m.presence", "sender": row.user_id, "content": self._presence.format(row)}
            )
            if flt.limit is not None and len(events) >= flt.limit:
                break
        return events

    async def _run_extensions(
        self,
        req: SyncRequest,
        since: StreamToken | None,
        now: StreamToken,
        joined_ids: list[str],
        response: dict[str, Any],
    ) -> None:
        if not self._extensions:
            return
        ctx = SyncContext(
            user_id=req.user_id,
            device_id=req.device_id,
            since=since,
            now=now,
            full_state=req.full_state,
            joined_room_ids=frozenset(joined_ids),
            unread_thread_notifications=req.filter.timeline.unread_thread_notifications,
        )
        for ext in list(self._extensions):
            await ext.top_level(ctx, response)
            for membership in ("join", "invite", "leave", "knock"):
                for room_id, room in response["rooms"][membership].items():
                    await ext.per_room(ctx, room_id, room, membership)
