"""Device-list changes: recording them and telling a user whose lists to re-fetch.

A change is written to the `device_lists` stream (keys uploaded, cross-signing keys or
signatures changed, device deleted) and every user sharing a room with the changed user
is woken. What a user must re-fetch between two tokens (`changed`) and whom they no
longer share a room with (`left`) also depends on membership changes in the events
stream: a newly shared user's devices are unknown to the client, so they count as
changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from homeserver.storage.current_state import CurrentStateStore
from homeserver.storage.device_lists import DeviceListStore
from homeserver.sync.activity import RoomActivity
from homeserver.sync.notifier import Notifier
from homeserver.sync.tokens import StreamToken


@dataclass(frozen=True)
class DeviceListDelta:
    changed: list[str]
    left: list[str]


class DeviceListService:
    def __init__(
        self, store: DeviceListStore, current_state: CurrentStateStore, notifier: Notifier
    ) -> None:
        self._store = store
        self._current_state = current_state
        self._notifier = notifier
        # Set by the app: recent membership activity, to skip queries when none.
        self.activity: RoomActivity | None = None

    async def mark_changed(self, user_id: str) -> int:
        """Record a change of `user_id`'s devices and wake everyone who shares a room."""
        position = await self._store.add_change(user_id)
        interested = await self._store.get_users_sharing_room(user_id)
        interested.add(user_id)
        self._notifier.notify("device_lists", position, users=sorted(interested))
        return position

    async def changes(
        self,
        user_id: str,
        since: StreamToken,
        now: StreamToken,
        joined_rooms: Iterable[str] = (),
    ) -> DeviceListDelta:
        """Whose device lists `user_id` should re-fetch between `since` and `now`.

        Most incremental syncs have no device change and no membership change in the
        user's rooms: those are answered from stream positions and the in-memory room
        activity, without a query."""
        keys_moved = now.device_lists > since.device_lists
        members_moved = now.events > since.events
        if members_moved and self.activity is not None and joined_rooms:
            moved = self.activity.membership_changed_since(since.events, joined_rooms, user_id)
            members_moved = moved is None or moved
        if not keys_moved and not members_moved:
            return DeviceListDelta(changed=[], left=[])
        shared = await self._store.get_users_sharing_room(user_id)
        changed: set[str] = set()
        if keys_moved:
            changed = await self._store.get_changed_users(
                sorted(shared | {user_id}), since.device_lists, now.device_lists
            )
        left: set[str] = set()
        if members_moved:
            joined_rooms = await self._current_state.get_rooms_for_user(user_id)
            moves = await self._store.get_membership_changes(joined_rooms, since.events, now.events)
            for _room, other, membership in moves:
                if other == user_id:
                    continue
                if membership == "join":
                    changed.add(other)
                elif other not in shared:
                    left.add(other)
            for room_id, membership in await self._store.get_own_membership_changes(
                user_id, since.events, now.events
            ):
                members = await self._current_state.get_users_in_room(room_id)
                if membership == "join":
                    changed.update(m for m in members if m != user_id)
                else:
                    left.update(m for m in members if m not in shared)
        left.discard(user_id)
        changed -= left
        return DeviceListDelta(changed=sorted(changed), left=sorted(left))

    async def current_position(self) -> int:
        return await self._store.get_max_position()
