"""Inbound EDUs of a /send transaction, dispatched by type.

Each handler checks that the users it acts for belong to the origin server (a server may
only speak for its own users) and that room ACLs allow the origin, then hands the update
to the service that owns the stream. The ephemeral services (typing, receipts,
presence) and the device-list service are found in app state by their class, since
their areas own their AppKeys; a missing service means the EDU is dropped (logged).
To-device messages go straight to the to-device store and wake the recipients.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TypeVar

from federation.acl import room_acl, server_allowed
from federation.appkeys import EduHandler
from homeserver.appstate import DATABASE
from homeserver.services import NOTIFIER, STORES
from homeserver.storage import IntegrityError, Stores

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_TYPING_TIMEOUT_MS = 30_000


def _server_of(user_id: Any) -> str | None:
    if not isinstance(user_id, str) or not user_id.startswith("@"):
        return None
    return user_id.partition(":")[2] or None


def find_service(app: Mapping[Any, Any], cls: type[T]) -> T | None:
    """The app-state value that is an instance of `cls` (None if not set up)."""
    for key in list(app):
        value = app.get(key)
        if isinstance(value, cls):
            return value
    return None


class EduDispatcher:
    """Builds the default EDU handlers over one app's state."""

    def __init__(self, app: Mapping[Any, Any], server_name: str) -> None:
        self.app = app
        self.server_name = server_name

    @property
    def stores(self) -> Stores:
        return self.app[STORES]

    def handlers(self) -> dict[str, EduHandler]:
        return {
            "m.typing": self.typing,
            "m.receipt": self.receipt,
            "m.presence": self.presence,
            "m.device_list_update": self.device_list_update,
            "m.signing_key_update": self.device_list_update,
            "m.direct_to_device": self.direct_to_device,
        }

    async def _room_ok(self, room_id: Any, origin: str) -> bool:
        if not isinstance(room_id, str):
            return False
        if await self.stores.rooms.get_room_version(room_id) is None:
            return False
        return server_allowed(await room_acl(self.stores, room_id), origin)

    async def typing(self, origin: str, content: dict[str, Any]) -> None:
        from homeserver.ephemeral.typing import TypingService

        room_id, user_id = content.get("room_id"), content.get("user_id")
        typing = content.get("typing")
        if _server_of(user_id) != origin or not isinstance(typing, bool):
            return
        if not await self._room_ok(room_id, origin):
            return
        if await self.stores.current_state.get_membership(room_id, user_id) != "join":
            return
        service = find_service(self.app, TypingService)
        if service is None:
            log.info("m.typing dropped: no typing service")
            return
        timeout = content.get("timeout")
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0:
            timeout = MAX_TYPING_TIMEOUT_MS
        service.set_remote(room_id, user_id, typing, min(timeout, MAX_TYPING_TIMEOUT_MS))

    async def receipt(self, origin: str, content: dict[str, Any]) -> None:
        from homeserver.ephemeral.receipts import ReceiptsService

        service = find_service(self.app, ReceiptsService)
        for room_id, by_type in content.items():
            if not isinstance(by_type, dict) or not await self._room_ok(room_id, origin):
                continue
            for receipt_type, by_user in by_type.items():
                if not isinstance(by_user, dict):
                    continue
                for user_id, receipt in by_user.items():
                    if _server_of(user_id) != origin or not isinstance(receipt, dict):
                        continue
                    event_ids = receipt.get("event_ids")
                    if not isinstance(event_ids, list) or not all(
                        isinstance(e, str) for e in event_ids
                    ):
                        continue
                    data = receipt.get("data")
                    if service is None:
                        log.info("m.receipt dropped: no receipts service")
                        return
                    await service.apply_remote(
                        room_id,
                        receipt_type,
                        user_id,
                        event_ids,
                        data if isinstance(data, dict) else None,
                    )

    async def presence(self, origin: str, content: dict[str, Any]) -> None:
        from homeserver.ephemeral.presence import PresenceService

        push = content.get("push")
        if not isinstance(push, list):
            return
        service = find_service(self.app, PresenceService)
        if service is None:
            log.info("m.presence dropped: no presence service")
            return
        for item in push:
            if not isinstance(item, dict) or _server_of(item.get("user_id")) != origin:
                continue
            state = item.get("presence")
            if not isinstance(state, str):
                continue
            msg = item.get("status_msg")
            ago = item.get("last_active_ago")
            await service.set_remote(
                item["user_id"],
                state,
                msg if isinstance(msg, str) else None,
                ago if isinstance(ago, int) and not isinstance(ago, bool) else None,
                item.get("currently_active") is True,
            )

    async def device_list_update(self, origin: str, content: dict[str, Any]) -> None:
        """A remote user's devices or cross-signing keys changed (`m.device_list_update`
        or `m.signing_key_update`): local users sharing a room with them must re-fetch
        (device_lists stream). We keep no copy of remote keys (every /keys/query of a
        remote user asks their server), so there is nothing to invalidate; an update
        for a user none of our users shares a room with is dropped."""
        from homeserver.e2ee.device_lists import DeviceListService
        from homeserver.storage.device_lists import DeviceListStore

        user_id = content.get("user_id")
        if _server_of(user_id) != origin:
            return
        service = find_service(self.app, DeviceListService)
        if service is None:
            service = DeviceListService(
                DeviceListStore(self.app[DATABASE]),
                self.stores.current_state,
                self.app[NOTIFIER],
            )
        if not await service.shares_room_with_local_user(user_id, self.server_name):
            log.debug("device-list EDU from %s dropped: %s shares no room", origin, user_id)
            return
        device_id = content.get("device_id")
        await service.mark_changed(
            user_id,
            device_id if isinstance(device_id, str) else None,
            deleted=content.get("deleted") is True,
        )

    async def direct_to_device(self, origin: str, content: dict[str, Any]) -> None:
        from homeserver.storage.to_device import ToDeviceMessage, ToDeviceStore

        sender, ev_type = content.get("sender"), content.get("type")
        message_id, messages = content.get("message_id"), content.get("messages")
        if _server_of(sender) != origin or not isinstance(ev_type, str):
            return
        if not isinstance(messages, dict):
            return
        out: list[ToDeviceMessage] = []
        for user_id, by_device in messages.items():
            if _server_of(user_id) != self.server_name or not isinstance(by_device, dict):
                continue
            for device_id, body in by_device.items():
                if not isinstance(body, dict):
                    continue
                if device_id == "*":
                    devices = [d.device_id for d in await self.stores.accounts.get_devices(user_id)]
                else:
                    devices = [device_id]
                out.extend(ToDeviceMessage(user_id, d, sender, ev_type, body) for d in devices)
        if not out:
            return
        store = find_service(self.app, ToDeviceStore) or ToDeviceStore(self.app[DATABASE])
        txn = (sender, origin, message_id) if isinstance(message_id, str) else None
        try:
            position = await store.add_messages(out, txn=txn)
        except IntegrityError:
            return  # a retried transaction: already delivered
        if position is not None:
            self.app[NOTIFIER].notify("to_device", position, users=sorted({m.user_id for m in out}))
