"""Device-list changes: recording them and telling a user whose lists to re-fetch.

A change is written to the `device_lists` stream (keys uploaded, cross-signing keys or
signatures changed, device deleted) and every user sharing a room with the changed user
is woken. What a user must re-fetch between two tokens (`changed`) and whom they no
longer share a room with (`left`) also depends on membership changes in the events
stream: a newly shared user's devices are unknown to the client, so they count as
changed.

Listeners (`DeviceListService.listeners`) hear of every change after it is recorded:
the outbound EDU broadcaster (homeserver/e2ee/device_list_edus.py) uses them to tell
other servers about our users' changes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from homeserver.storage.current_state import CurrentStateStore
from homeserver.storage.device_lists import DeviceListStore
from homeserver.sync.activity import RoomActivity
from homeserver.sync.notifier import Notifier
from homeserver.sync.tokens import StreamToken

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceListChange:
    """One recorded change: `device_id` (None for a change of the user's cross-signing
    keys only) at stream `position`; `previous` is the user's prior position (None if
    this is the first); `interested` are the users sharing a room, the user included."""

    user_id: str
    position: int
    previous: int | None
    device_id: str | None
    deleted: bool
    signing_keys: bool
    interested: frozenset[str]


DeviceListListener = Callable[[DeviceListChange], Awaitable[None]]


@dataclass(frozen=True)
class DeviceListDelta:
    changed: list[str]
    left: list[str]


class DeviceListService:
    def __init__(
        self,
        store: DeviceListStore,
        current_state: CurrentStateStore,
        notifier: Notifier,
        activity: RoomActivity | None = None,
        listeners: Sequence[DeviceListListener] = (),
    ) -> None:
        self._store = store
        self._current_state = current_state
        self._notifier = notifier
        # Recent membership activity, to skip queries when there was none.
        self._activity = activity
        # Called after every recorded change (failures are logged, never raised).
        self._listeners = list(listeners)

    async def mark_changed(
        self,
        user_id: str,
        device_id: str | None = None,
        *,
        deleted: bool = False,
        signing_keys: bool = False,
    ) -> int:
        """Record a change of `user_id`'s devices and wake everyone who shares a room.

        `device_id` names the device that was added, changed or (`deleted`) removed;
        `signing_keys` says the user's cross-signing keys changed. Both only matter to
        listeners (what to tell other servers); local clients just re-fetch the list."""
        position, previous = await self._store.add_change_after(user_id)
        interested = await self._store.get_users_sharing_room(user_id)
        interested.add(user_id)
        self._notifier.notify("device_lists", position, users=sorted(interested))
        change = DeviceListChange(
            user_id, position, previous, device_id, deleted, signing_keys, frozenset(interested)
        )
        for listener in list(self._listeners):
            try:
                await listener(change)
            except Exception:  # telling others must never fail the change itself
                log.exception("device-list listener failed for %s", user_id)
        return position

    def add_listener(self, listener: DeviceListListener) -> None:
        self._listeners.append(listener)

    async def user_position(self, user_id: str) -> int:
        """The stream position of `user_id`'s latest change (0 if none)."""
        return await self._store.get_user_position(user_id)

    async def shares_room_with_local_user(self, user_id: str, server_name: str) -> bool:
        """Whether any user of `server_name` is joined to a room `user_id` is in."""
        return any(
            u.partition(":")[2] == server_name
            for u in await self._store.get_users_sharing_room(user_id)
        )

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
        if members_moved and self._activity is not None and joined_rooms:
            moved = self._activity.membership_changed_since(since.events, joined_rooms, user_id)
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
