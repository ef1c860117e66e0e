"""Inbound EDUs of a /send transaction, dispatched by type.

Each handler checks that the users it acts for belong to the origin server (a server may
only speak for its own users) and that room ACLs allow the origin, then hands the update
to the service that owns the stream (typing, receipts, presence, device lists,
to-device), each given to the constructor by the composition module.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from federation.acl import room_acl, server_allowed
from homeserver.e2ee.device_lists import DeviceListService
from homeserver.e2ee.remote_device_cache import RemoteDeviceCache
from homeserver.e2ee.to_device import ToDeviceService
from homeserver.ephemeral.presence import PresenceService
from homeserver.ephemeral.receipts import ReceiptsService
from homeserver.ephemeral.typing import TypingService
from homeserver.storage import Stores

log = logging.getLogger(__name__)

MAX_TYPING_TIMEOUT_MS = 30_000
# Presence entries looked at per m.presence EDU (a transaction carries at most 100 EDUs):
# each costs a shared-room lookup, and a server has no reason to send more at once.
MAX_PRESENCE_PER_EDU = 100
# Event IDs kept per receipt (one is what servers send; the rest are ignored).
MAX_RECEIPT_EVENT_IDS = 10

# EDU type -> handler(origin, content).
EduHandler = Callable[[str, dict[str, Any]], Awaitable[None]]


async def dispatch(handlers: dict[str, EduHandler], origin: str, edus: list[Any]) -> None:
    """Each EDU to its handler, in order (unknown types and malformed EDUs are skipped;
    a handler that fails is logged: one bad EDU never stops the others)."""
    for edu in edus:
        if not isinstance(edu, dict):
            continue
        edu_type, content = edu.get("edu_type"), edu.get("content")
        handler = handlers.get(edu_type) if isinstance(edu_type, str) else None
        if handler is None or not isinstance(content, dict):
            continue
        try:
            await handler(origin, content)
        except Exception:
            log.exception("EDU %s from %s failed", edu_type, origin)


def _server_of(user_id: Any) -> str | None:
    if not isinstance(user_id, str) or not user_id.startswith("@"):
        return None
    return user_id.partition(":")[2] or None


class InboundEdus:
    """The handlers of the EDU types we understand."""

    def __init__(
        self,
        stores: Stores,
        server_name: str,
        typing: TypingService,
        receipts: ReceiptsService,
        presence: PresenceService,
        device_lists: DeviceListService,
        to_device: ToDeviceService,
        *,
        remote_devices: RemoteDeviceCache | None = None,
    ) -> None:
        self.stores = stores
        self.server_name = server_name
        self._typing = typing
        self._receipts = receipts
        self._presence = presence
        self._device_lists = device_lists
        self._to_device = to_device
        self._remote_devices = remote_devices

    def handlers(self) -> dict[str, EduHandler]:
        return {
            "m.typing": self.typing,
            "m.receipt": self.receipt,
            "m.presence": self.presence,
            "m.device_list_update": self.device_list_update,
            "m.signing_key_update": self.signing_key_update,
            "m.direct_to_device": self.direct_to_device,
        }

    async def _room_ok(self, room_id: Any, origin: str) -> bool:
        if not isinstance(room_id, str):
            return False
        if await self.stores.rooms.get_room_version(room_id) is None:
            return False
        return server_allowed(await room_acl(self.stores, room_id), origin)

    async def typing(self, origin: str, content: dict[str, Any]) -> None:
        room_id, user_id = content.get("room_id"), content.get("user_id")
        typing = content.get("typing")
        if _server_of(user_id) != origin or not isinstance(typing, bool):
            return
        if not isinstance(user_id, str) or not isinstance(room_id, str):
            return
        if not await self._room_ok(room_id, origin):
            return
        if await self.stores.current_state.get_membership(room_id, user_id) != "join":
            return
        timeout = content.get("timeout")
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0:
            timeout = MAX_TYPING_TIMEOUT_MS
        self._typing.set_remote(room_id, user_id, typing, min(timeout, MAX_TYPING_TIMEOUT_MS))

    async def receipt(self, origin: str, content: dict[str, Any]) -> None:
        for room_id, by_type in content.items():
            if not isinstance(by_type, dict) or not await self._room_ok(room_id, origin):
                continue
            for receipt_type, by_user in by_type.items():
                if not isinstance(by_user, dict):
                    continue
                for user_id, receipt in by_user.items():
                    if _server_of(user_id) != origin or not isinstance(receipt, dict):
                        continue
                    # Only a member may mark the room read: a server with no user in
                    # it (or speaking for one who left) cannot inject receipts.
                    membership = await self.stores.current_state.get_membership(room_id, user_id)
                    if membership != "join":
                        continue
                    event_ids = receipt.get("event_ids")
                    if not isinstance(event_ids, list) or not all(
                        isinstance(e, str) for e in event_ids
                    ):
                        continue
                    event_ids = event_ids[:MAX_RECEIPT_EVENT_IDS]
                    data = receipt.get("data")
                    await self._receipts.apply_remote(
                        room_id,
                        receipt_type,
                        user_id,
                        event_ids,
                        data if isinstance(data, dict) else None,
                    )

    async def presence(self, origin: str, content: dict[str, Any]) -> None:
        push = content.get("push")
        if not isinstance(push, list):
            return
        seen: set[str] = set()
        for item in push[:MAX_PRESENCE_PER_EDU]:
            if not isinstance(item, dict) or _server_of(item.get("user_id")) != origin:
                continue
            state = item.get("presence")
            user_id = item["user_id"]
            if not isinstance(state, str) or user_id in seen:
                continue
            seen.add(user_id)
            # Kept only for users who share a room with one of ours: presence of
            # strangers is of no use to anyone here and would grow without bound.
            if not await self._device_lists.shares_room_with_local_user(user_id, self.server_name):
                continue
            msg = item.get("status_msg")
            ago = item.get("last_active_ago")
            await self._presence.set_remote(
                user_id,
                state,
                msg if isinstance(msg, str) else None,
                ago if isinstance(ago, int) and not isinstance(ago, bool) else None,
                item.get("currently_active") is True,
            )

    async def device_list_update(self, origin: str, content: dict[str, Any]) -> None:
        """A remote user's devices or cross-signing keys changed (`m.device_list_update`
        or `m.signing_key_update`): the cached copy of their list is patched (or marked
        stale when an update was missed, homeserver.e2ee.remote_device_cache) and local
        users sharing a room with them are told to re-fetch (device_lists stream). An
        update for a user none of our users shares a room with is dropped."""
        user_id = content.get("user_id")
        if _server_of(user_id) != origin:
            return
        assert isinstance(user_id, str)
        service = self._device_lists
        if not await service.shares_room_with_local_user(user_id, self.server_name):
            log.debug("device-list EDU from %s dropped: %s shares no room", origin, user_id)
            return
        device_id = content.get("device_id")
        if self._remote_devices is not None:
            await self._remote_devices.apply_device_update(user_id, content)
        await service.mark_changed(
            user_id,
            device_id if isinstance(device_id, str) else None,
            deleted=content.get("deleted") is True,
        )

    async def signing_key_update(self, origin: str, content: dict[str, Any]) -> None:
        user_id = content.get("user_id")
        if (
            self._remote_devices is not None
            and isinstance(user_id, str)
            and _server_of(user_id) == origin
            and await self._device_lists.shares_room_with_local_user(user_id, self.server_name)
        ):
            await self._remote_devices.apply_signing_key_update(user_id, content)
        await self.device_list_update(origin, content)

    async def direct_to_device(self, origin: str, content: dict[str, Any]) -> None:
        """Delivered like a local /sendToDevice (homeserver.e2ee.to_device)."""
        sender, ev_type = content.get("sender"), content.get("type")
        message_id = content.get("message_id")
        if _server_of(sender) != origin or not isinstance(ev_type, str):
            return
        assert isinstance(sender, str)
        await self._to_device.receive_remote(
            origin,
            sender,
            ev_type,
            message_id if isinstance(message_id, str) else None,
            content.get("messages"),
        )
