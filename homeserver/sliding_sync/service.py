"""Simplified sliding sync (MSC4186): the request loop, room lists and extensions.

A connection is (user, device, `conn_id`). Each response ends at a new position `pos`,
stored with the stream token it covers and, per room sent, the event position it was
sent up to and the config fingerprint it was sent with. A request names the position
it acknowledges; the response says only what changed since then, so a retried `pos`
gets the same changes again (nothing is lost if a response never arrived). An unknown
`pos` (expired, or from before a restart of the client's connection) answers
400 M_UNKNOWN_POS and the client starts over. Positions unused for POSITION_TTL_MS are
deleted.

Lists are the user's joined, invited and knocked rooms, filtered, ordered by bump
stamp (newest first: homeserver.storage.sliding_sync.BUMP_EVENT_TYPES), cut by the
requested ranges; `count` is the filtered total. Room subscriptions add rooms the user
is in. Long-polling uses the same notifier as /sync.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from collections.abc import Set as AbstractSet
from dataclasses import replace
from typing import Any

from homeserver.e2ee.device_lists import DeviceListService
from homeserver.e2ee.keys import KeysService
from homeserver.e2ee.to_device import ToDeviceService
from homeserver.ephemeral.account_data import AccountDataService
from homeserver.ephemeral.receipts import ReceiptsService
from homeserver.ephemeral.typing import TypingService
from homeserver.errors import MatrixError
from homeserver.push.actions import ActionGenerator
from homeserver.storage import Stores
from homeserver.storage.sliding_sync import SlidingSyncStore, Snapshot
from homeserver.sync.activity import RoomActivity
from homeserver.sync.notifier import Notifier
from homeserver.sync.tokens import StreamToken

from .bump_stamps import BumpStamps
from .positions import Positions
from .request import ExtensionRequest, ListFilters, ListRequest, RoomConfig, SlidingRequest
from .room_order import Candidate, RoomOrder
from .rooms import JoinedJob, RoomBuilder

MAX_TIMEOUT_MS = 120_000
# Lazily-loaded members remembered per room and connection (Synapse keeps them in a
# table): beyond this many, the oldest are sent again when they speak.
MAX_LAZY_MEMBERS = 50
POSITION_TTL_MS = 7 * 24 * 3600 * 1000


NO_FILTERS = ListFilters()


def unknown_pos() -> MatrixError:
    return MatrixError(400, "M_UNKNOWN_POS", "Unknown or expired position: start over")


class SlidingSyncService:
    def __init__(
        self,
        stores: Stores,
        store: SlidingSyncStore,
        rooms: RoomBuilder,
        notifier: Notifier,
        account_data: AccountDataService,
        receipts: ReceiptsService,
        typing: TypingService,
        to_device: ToDeviceService,
        keys: KeysService,
        device_lists: DeviceListService,
        push_actions: ActionGenerator,
        bumps: BumpStamps,
        activity: RoomActivity | None = None,
        excluded_rooms: frozenset[str] = frozenset(),
        forgotten_rooms: Callable[[str], Awaitable[set[str]]] | None = None,
    ) -> None:
        self._excluded = excluded_rooms  # exclude_rooms_from_sync: in no list
        # The rooms a user forgot: in no list either (as Synapse).
        self._forgotten = forgotten_rooms
        self._order = RoomOrder(bumps)
        self._activity = activity
        self._stores = stores
        self._store = store
        self._positions = Positions(store)  # recent ones in memory, written behind
        self._rooms = rooms
        self._notifier = notifier
        self._account_data = account_data
        self._receipts = receipts
        self._typing = typing
        self._to_device = to_device
        self._keys = keys
        self._device_lists = device_lists
        self._push_actions = push_actions

    async def close(self) -> None:
        await self._positions.close()

    async def expire_positions(self) -> int:
        return await self._store.expire(int(time.time() * 1000) - POSITION_TTL_MS)

    async def sync(
        self,
        user_id: str,
        device_id: str,
        req: SlidingRequest,
        pos: str | None,
        timeout_ms: int,
    ) -> dict[str, Any]:
        snapshot: Snapshot | None = None
        acked: int | None = None
        if pos is not None:
            if not pos.isdigit() or len(pos) > 19:
                raise unknown_pos()
            acked = int(pos)
            snapshot = await self._positions.get(user_id, device_id, req.conn_id, acked)
            if snapshot is None:
                raise unknown_pos()
        deadline = time.monotonic() + min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
        while True:
            rows = await self._stores.current_state.memberships_snapshot(user_id)  # cached
            with self._notifier.listen(user_id, self._order.joined(user_id, rows)) as listener:
                now = self._notifier.current
                response, rooms_sent, counts = await self._build(
                    user_id, device_id, req, snapshot, now
                )
                lists_moved = snapshot is None or counts != snapshot.rooms.get("\x00counts")
                remaining = deadline - time.monotonic()
                if response["rooms"] or _has_news(response["extensions"]) or lists_moved:
                    break
                if remaining <= 0:
                    break
                await listener.wait(remaining)
        new_pos = secrets.randbelow(2**62)
        rooms_sent["\x00counts"] = counts
        self._positions.put(
            user_id,
            device_id,
            req.conn_id,
            new_pos,
            Snapshot(now.encode(), rooms_sent),
            keep=acked,
        )
        response["pos"] = str(new_pos)
        return response

    # -- building ----------------------------------------------------------------------

    async def _candidates(
        self, user_id: str, since_events: int | None, sent: dict[str, Any]
    ) -> tuple[dict[str, Candidate], list[Candidate]]:
        """Joined, invited and knocked rooms; and rooms left or banned from since the
        last position that the client was shown (once, so it sees the change); and
        them in list order (kept between requests: room_order.py)."""
        rows = await self._stores.current_state.memberships_snapshot(user_id)  # cached
        # v1.18: a user who blocks invites is not shown them (nor their rooms' state).
        blocked = await self._account_data.invites_blocked(user_id)
        shown = ("join", "knock") if blocked else ("join", "invite", "knock")
        by_room, ordered = await self._order.candidates(user_id, rows, shown, since_events, sent)
        # After the cached order (keyed on the rows tuple): excluded and forgotten rooms.
        hidden = set(self._excluded)
        if self._forgotten is not None and any(c.membership in ("leave", "ban") for c in ordered):
            hidden |= await self._forgotten(user_id)
        if hidden:
            by_room = {r: c for r, c in by_room.items() if r not in hidden}
            ordered = [c for c in ordered if c.room_id not in hidden]
        return by_room, ordered

    async def _dm_rooms(self, user_id: str) -> set[str]:
        content = await self._account_data.get(user_id, "m.direct") or {}
        rooms: set[str] = set()
        for value in content.values():
            if isinstance(value, list):
                rooms.update(r for r in value if isinstance(r, str))
        return rooms

    async def _room_facts(
        self, room_ids: list[str]
    ) -> dict[str, tuple[str | None, bool, set[str]]]:
        """room -> (room type, encrypted, space children), for list filters."""
        out: dict[str, tuple[str | None, bool, set[str]]] = {}
        for room_id in room_ids:
            state = await self._stores.current_state.get_current_state_ids(
                room_id, ["m.room.create", "m.room.encryption", "m.space.child"]
            )
            create_id = state.get(("m.room.create", ""))
            create = await self._stores.events.get_event(create_id) if create_id else None
            room_type = create.content.get("type") if create is not None else None
            children = {k[1] for k in state if k[0] == "m.space.child"}
            out[room_id] = (
                room_type if isinstance(room_type, str) else None,
                ("m.room.encryption", "") in state,
                children,
            )
        return out

    async def _filtered(
        self,
        candidates: list[Candidate],
        filters: ListFilters,
        dms: set[str],
        facts: dict[str, tuple[str | None, bool, set[str]]],
    ) -> list[Candidate]:
        if filters == NO_FILTERS:
            return candidates
        out = []
        space_children: set[str] | None = None
        if filters.spaces is not None:
            space_children = set()
            for space in filters.spaces:
                if space in facts:
                    space_children |= facts[space][2]
        for c in candidates:
            if filters.is_dm is not None and (c.room_id in dms) != filters.is_dm:
                continue
            if filters.is_invite is not None and (c.membership == "invite") != filters.is_invite:
                continue
            room_type, encrypted, _children = facts.get(c.room_id, (None, False, set()))
            if filters.is_encrypted is not None and encrypted != filters.is_encrypted:
                continue
            if filters.room_types is not None and room_type not in filters.room_types:
                continue
            if filters.not_room_types is not None and room_type in filters.not_room_types:
                continue
            if space_children is not None and c.room_id not in space_children:
                continue
            out.append(c)
        return out

    @staticmethod
    def _needs_facts(lists: tuple[ListRequest, ...]) -> bool:
        return any(
            f.is_encrypted is not None
            or f.room_types is not None
            or f.not_room_types is not None
            or f.spaces is not None
            for f in (lst.filters for lst in lists)
        )

    async def _build(
        self,
        user_id: str,
        device_id: str,
        req: SlidingRequest,
        snapshot: Snapshot | None,
        now: StreamToken,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
        since = StreamToken.decode(snapshot.token) if snapshot is not None else None
        candidates, ordered = await self._candidates(
            user_id, since.events if since else None, snapshot.rooms if snapshot else {}
        )
        dms = await self._dm_rooms(user_id)
        facts: dict[str, tuple[str | None, bool, set[str]]] = {}
        if self._needs_facts(req.lists):
            wanted = set(candidates)
            for lst in req.lists:
                wanted |= set(lst.filters.spaces or ())
            facts = await self._room_facts(sorted(wanted))

        configs: dict[str, RoomConfig] = {}
        in_list: dict[str, list[str]] = {}
        counts: dict[str, int] = {}
        lists_out: dict[str, Any] = {}
        for lst in req.lists:
            matching = await self._filtered(ordered, lst.filters, dms, facts)
            counts[lst.name] = len(matching)
            lists_out[lst.name] = {"count": len(matching)}
            for start, end in lst.ranges:
                for c in matching[start : end + 1]:
                    configs[c.room_id] = (
                        configs[c.room_id].merged(lst.config)
                        if c.room_id in configs
                        else lst.config
                    )
                    in_list.setdefault(lst.name, []).append(c.room_id)
        for room_id, config in req.subscriptions.items():
            if room_id in candidates and room_id not in req.unsubscribe:
                configs[room_id] = configs[room_id].merged(config) if room_id in configs else config

        await self._push_actions.wait_until(now.events)
        # Which rooms had events since the last position, from memory when the activity
        # window reaches back that far (then unchanged rooms cost no query).
        changed: dict[str, int] | None = None
        if since is not None and self._activity is not None:
            changed = self._activity.rooms_changed_between(since.events, now.events)
        sent: dict[str, Any] = dict(snapshot.rooms) if snapshot is not None else {}
        rooms_out: dict[str, Any] = {}
        jobs: list[JoinedJob] = []
        # Rooms where the user's own read receipt moved: their unread counts changed.
        read = await self._own_receipts(user_id, list(configs), since, now)
        for room_id, config in configs.items():
            c = candidates[room_id]
            previous = sent.get(room_id)
            fresh = (
                previous is None
                or previous.get("rs") != config.key
                or previous.get("m") != c.membership
            )
            # Sent before with a smaller timeline (a list's 1, then a subscription's
            # 20 when the room is opened): the full timeline again, as Synapse does.
            expanded = (
                previous is not None
                and not fresh
                and int(previous.get("tl", 0)) < config.timeline_limit
            )
            lazy_sent: list[str] = [] if fresh or previous is None else previous.get("lz", [])
            sent[room_id] = {
                "ts": now.events,
                "rs": config.key,
                "tl": config.timeline_limit,
                "m": c.membership,
            }
            if lazy_sent:
                sent[room_id]["lz"] = lazy_sent
            if c.membership in ("leave", "ban") and previous is not None:
                # Gone since the last position: the change (the leave or ban event) once.
                jobs.append(JoinedJob(room_id, config, int(previous["ts"]), room_id in dms, c.bump))
                del sent[room_id]
            elif c.membership != "join":
                if fresh:
                    rooms_out[room_id] = await self._rooms.invited_room(
                        room_id, user_id, c.bump, room_id in dms, c.membership
                    )
            elif (
                fresh
                or expanded
                or not _unchanged(previous, since, changed, room_id)
                or room_id in read
            ):
                jobs.append(
                    JoinedJob(
                        room_id,
                        config,
                        None if fresh or previous is None else int(previous["ts"]),
                        room_id in dms,
                        c.bump,
                        counts_changed=room_id in read,
                        expanded=expanded,
                        lazy_sent=frozenset(lazy_sent),
                    )
                )
        states, members = await self._rooms.prefetch([j.room_id for j in jobs])
        jobs = [
            replace(j, state=states.get(j.room_id), members=members.get(j.room_id)) for j in jobs
        ]
        lazy: dict[str, set[str]] = {}
        rooms_out.update(await self._rooms.joined_rooms(user_id, device_id, jobs, now.events, lazy))
        for room_id, users in lazy.items():
            if room_id in sent:
                known = [*sent[room_id].get("lz", []), *sorted(users)]
                sent[room_id]["lz"] = list(dict.fromkeys(known))[-MAX_LAZY_MEMBERS:]
        extensions = await self._extensions(
            user_id, device_id, req, since, now, list(configs), in_list, candidates.keys()
        )
        response = {"lists": lists_out, "rooms": rooms_out, "extensions": extensions}
        return response, sent, counts

    async def _own_receipts(
        self, user_id: str, rooms: list[str], since: StreamToken | None, now: StreamToken
    ) -> set[str]:
        if since is None or since.receipts >= now.receipts or not rooms:
            return set()
        found = await self._receipts.receipts_for_sync(user_id, rooms, since.receipts, now.receipts)
        return {
            room_id
            for room_id, event in found.items()
            if any(
                user_id in by_user
                for by_type in event["content"].values()
                for by_user in by_type.values()
            )
        }

    # -- extensions --------------------------------------------------------------------

    @staticmethod
    def _scope(
        ext: ExtensionRequest,
        visible: list[str],
        in_list: dict[str, list[str]],
        member_of: AbstractSet[str],
    ) -> list[str]:
        """The rooms an extension covers: its `lists` and `rooms` (default: all visible)."""
        if ext.lists is None and ext.rooms is None:
            return visible
        rooms: list[str] = []
        for name in ext.lists if ext.lists is not None else list(in_list):
            rooms += in_list.get(name, [])
        if ext.rooms is not None:
            rooms += [r for r in ext.rooms if r in member_of]
        return list(dict.fromkeys(rooms))

    async def _extensions(
        self,
        user_id: str,
        device_id: str,
        req: SlidingRequest,
        since: StreamToken | None,
        now: StreamToken,
        visible: list[str],
        in_list: dict[str, list[str]],
        member_of: AbstractSet[str],
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        ext = req.extensions
        if ext.get("to_device", ExtensionRequest()).enabled:
            raw = ext["to_device"].since
            ack = int(raw) if raw is not None and raw.isdigit() and len(raw) < 19 else None
            events, reached = await self._to_device.messages_for_sync(
                user_id, device_id, ack, now.to_device
            )
            if events or ack is None:
                out["to_device"] = {"next_batch": str(reached), "events": events}
        if ext.get("e2ee", ExtensionRequest()).enabled:
            e2ee: dict[str, Any] = {
                "device_one_time_keys_count": await self._keys.one_time_key_counts(
                    user_id, device_id
                ),
                "device_unused_fallback_key_types": await self._keys.unused_fallback_key_types(
                    user_id, device_id
                ),
            }
            if since is not None:
                delta = await self._device_lists.changes(user_id, since, now, member_of)
                if delta.changed or delta.left:
                    e2ee["device_lists"] = {"changed": delta.changed, "left": delta.left}
            out["e2ee"] = e2ee
        if ext.get("account_data", ExtensionRequest()).enabled:
            in_scope = set(self._scope(ext["account_data"], visible, in_list, member_of))
            entries = await self._account_data.changes_since(
                user_id, since.account_data if since is not None else 0
            )
            global_events = []
            per_room: dict[str, list[dict[str, Any]]] = {}
            for entry in entries:
                if entry.stream_id > now.account_data:
                    continue
                event = {"type": entry.data_type, "content": entry.content}
                if not entry.room_id:
                    global_events.append(event)
                elif entry.room_id in in_scope:
                    per_room.setdefault(entry.room_id, []).append(event)
            if global_events or per_room:
                out["account_data"] = {"global": global_events, "rooms": per_room}
        if ext.get("receipts", ExtensionRequest()).enabled:
            scope = self._scope(ext["receipts"], visible, in_list, member_of)
            receipts = await self._receipts.receipts_for_sync(
                user_id, scope, since.receipts if since is not None else None, now.receipts
            )
            if receipts:
                out["receipts"] = {"rooms": receipts}
        if ext.get("typing", ExtensionRequest()).enabled:
            scope = self._scope(ext["typing"], visible, in_list, member_of)
            typing = {
                room_id: self._typing.event_for(room_id)
                for room_id in scope
                if (since is None and self._typing.typing_users(room_id))
                or (since is not None and self._typing.room_position(room_id) > since.typing)
            }
            if typing:
                out["typing"] = {"rooms": typing}
        return out


def _has_news(extensions: dict[str, Any]) -> bool:
    """Whether extensions carry anything a long-poll should answer for (key counts,
    sent with every response, do not count)."""
    if extensions.get("to_device", {}).get("events"):
        return True
    if extensions.get("e2ee", {}).get("device_lists"):
        return True
    return any(k in extensions for k in ("account_data", "receipts", "typing"))


def _unchanged(
    previous: dict[str, Any] | None,
    since: StreamToken | None,
    changed: dict[str, int] | None,
    room_id: str,
) -> bool:
    """A room sent at the last position with no event since (known from memory)."""
    if previous is None or since is None or changed is None:
        return False
    return int(previous["ts"]) >= since.events and room_id not in changed
