"""The E2EE parts of /sync: to-device messages, device-list changes and key counts."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from homeserver.sync.extensions import SyncContext

from .device_lists import DeviceListService
from .keys import KeysService
from .to_device import ToDeviceService


class E2eeSyncExtension:
    """Fills `to_device`, `device_lists`, `device_one_time_keys_count` and
    `device_unused_fallback_key_types`.

    To-device messages up to `since.to_device` are acknowledged (deleted) and those up
    to `now.to_device` returned, at most MAX_PER_SYNC (then `next_batch` stands at the
    last one given); `device_lists` is only computed for incremental syncs
    (an initial sync makes the client fetch every list it needs anyway).
    """

    def __init__(
        self, keys: KeysService, to_device: ToDeviceService, device_lists: DeviceListService
    ) -> None:
        self._keys = keys
        self._to_device = to_device
        self._device_lists = device_lists

    async def top_level(self, ctx: SyncContext, response: dict[str, Any]) -> None:
        if ctx.device_id is not None:
            since = ctx.since.to_device if ctx.since is not None else None
            events, reached = await self._to_device.messages_for_sync(
                ctx.user_id, ctx.device_id, since, ctx.now.to_device
            )
            if events:
                response["to_device"] = {"events": events}
            if reached < ctx.now.to_device:  # more to come: the next sync starts there
                response["next_batch"] = replace(ctx.now, to_device=reached).encode()
            response["device_one_time_keys_count"] = await self._keys.one_time_key_counts(
                ctx.user_id, ctx.device_id
            )
            response[
                "device_unused_fallback_key_types"
            ] = await self._keys.unused_fallback_key_types(ctx.user_id, ctx.device_id)
        if ctx.since is not None:
            delta = await self._device_lists.changes(
                ctx.user_id, ctx.since, ctx.now, ctx.joined_room_ids
            )
            if delta.changed or delta.left:
                response["device_lists"] = {"changed": delta.changed, "left": delta.left}

    async def per_room(
        self, ctx: SyncContext, room_id: str, room: dict[str, Any], membership: str
    ) -> None:
        return None
