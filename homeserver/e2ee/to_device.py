"""Send-to-device messaging: queue for local devices, hand remote ones to federation.

Delivery is at-least-once until acknowledged: a message stays queued until the device
syncs with a `since` token at or past its position (see `E2eeSyncExtension`).
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from typing import Any

from homeserver.storage.accounts import AccountStore
from homeserver.storage.errors import IntegrityError
from homeserver.storage.to_device import ToDeviceMessage, ToDeviceStore
from homeserver.sync.notifier import Notifier

from . import validation as v
from .ports import RemoteToDevice

logger = logging.getLogger(__name__)

MAX_EVENT_TYPE_LENGTH = 255
# To-device messages one sync response carries at most (as Synapse): the response's
# token then stands at the last one given, so the next sync returns the rest at once.
# A device that stayed away while thousands piled up never gets them in one response.
MAX_PER_SYNC = 100
# Messages queued for one device at most: past it the oldest go (logged). Anyone, a
# local user or another server, may send to any of our devices, and a device that
# never syncs again never acknowledges; this is far above what a device away for
# weeks in a busy encrypted account gathers. Checked every CAP_CHECK_EVERY messages
# queued here for a device (so a device holds at most the cap plus that many per
# process writing the stream); MAX_CAP_COUNTERS devices are counted at most.
MAX_QUEUED_PER_DEVICE = 100_000
CAP_CHECK_EVERY = 1_000
MAX_CAP_COUNTERS = 100_000


class ToDeviceService:
    def __init__(
        self,
        store: ToDeviceStore,
        accounts: AccountStore,
        notifier: Notifier,
        server_name: str,
        remote: RemoteToDevice | None = None,
    ) -> None:
        self._store = store
        self._accounts = accounts
        self._notifier = notifier
        self._server_name = server_name
        self._remote = remote
        # Messages for remote users dropped because federation is not wired in yet.
        self.dropped_remote = 0
        # (user, device) -> the position up to which messages were deleted.
        self._acked: dict[tuple[str, str], int] = {}
        # (user, device) -> messages queued here since its cap was last enforced.
        self._queued_since_check: dict[tuple[str, str], int] = {}

    async def send(
        self,
        sender: str,
        sender_device: str | None,
        event_type: str,
        txn_id: str,
        body: dict[str, Any],
    ) -> None:
        """PUT /sendToDevice/{eventType}/{txnId}; a repeated txn ID is a no-op."""
        v.require_str(event_type, "eventType", max_len=MAX_EVENT_TYPE_LENGTH)
        v.require_str(txn_id, "txnId")
        messages = v.require_dict(body.get("messages"), "messages")
        device_key = sender_device or ""
        if await self._store.txn_seen(sender, device_key, txn_id):
            return
        local: list[ToDeviceMessage] = []
        remote: dict[str, dict[str, dict[str, Any]]] = {}
        for user_id, by_device in messages.items():
            by_device = v.require_dict(by_device, f"messages.{user_id}")
            for device_id, content in by_device.items():
                v.require_str(device_id, f"messages.{user_id} device ID")
                v.require_dict(content, f"messages.{user_id}.{device_id}")
            server = user_id.partition(":")[2]
            if server != self._server_name:
                remote.setdefault(server, {})[user_id] = by_device
                continue
            local += await self._expand_local(sender, event_type, user_id, by_device)
        try:
            position = await self._store.add_messages(local, txn=(sender, device_key, txn_id))
        except IntegrityError:
            return  # a concurrent request with the same txn ID won the race
        if position is not None:
            targets = sorted({m.user_id for m in local})
            self._notifier.notify("to_device", position, users=targets)
            await self._enforce_cap(local)
        await self._send_remote(sender, event_type, remote)

    async def receive_remote(
        self, origin: str, sender: str, event_type: str, message_id: str | None, messages: Any
    ) -> None:
        """An `m.direct_to_device` EDU from `origin` (which speaks for `sender`): the
        same delivery as a local send - only to devices that exist (`*` expands to the
        user's devices), once per (sender, origin, message_id)."""
        if not isinstance(messages, dict):
            return
        local: list[ToDeviceMessage] = []
        for user_id, by_device in messages.items():
            if not isinstance(user_id, str) or user_id.partition(":")[2] != self._server_name:
                continue
            if not isinstance(by_device, dict):
                continue
            valid = {d: c for d, c in by_device.items() if isinstance(c, dict)}
            local += await self._expand_local(sender, event_type, user_id, valid)
        if not local:
            return
        txn = (sender, origin, message_id) if message_id is not None else None
        try:
            position = await self._store.add_messages(local, txn=txn)
        except IntegrityError:
            return  # a retried transaction: already delivered
        if position is not None:
            self._notifier.notify("to_device", position, users=sorted({m.user_id for m in local}))
            await self._enforce_cap(local)

    async def _enforce_cap(self, queued: list[ToDeviceMessage]) -> None:
        """Count what was just queued per device; a device that reached CAP_CHECK_EVERY
        has its queue cut to MAX_QUEUED_PER_DEVICE (the oldest go)."""
        counts = self._queued_since_check
        if len(counts) > MAX_CAP_COUNTERS:
            counts.clear()
        for key, n in Counter((m.user_id, m.device_id) for m in queued).items():
            counts[key] = counts.get(key, 0) + n
            if counts[key] < CAP_CHECK_EVERY:
                continue
            del counts[key]
            dropped = await self._store.keep_newest(*key, MAX_QUEUED_PER_DEVICE)
            if dropped:
                logger.warning(
                    "%s's device %s had more than %d to-device messages queued:"
                    " dropped the oldest %d",
                    key[0], key[1], MAX_QUEUED_PER_DEVICE, dropped,
                )  # fmt: skip

    async def _expand_local(
        self, sender: str, event_type: str, user_id: str, by_device: dict[str, Any]
    ) -> list[ToDeviceMessage]:
        devices = {d.device_id for d in await self._accounts.get_devices(user_id)}
        out: list[ToDeviceMessage] = []
        for device_id, content in by_device.items():
            targets = sorted(devices) if device_id == "*" else [device_id]
            for target in targets:
                if target in devices:
                    out.append(ToDeviceMessage(user_id, target, sender, event_type, content))
        return out

    async def _send_remote(
        self, sender: str, event_type: str, remote: dict[str, dict[str, dict[str, Any]]]
    ) -> None:
        port = self._remote
        for server, messages in sorted(remote.items()):
            if port is None:
                self.dropped_remote += sum(len(m) for m in messages.values())
                logger.info("Dropping to-device messages for %s: no federation", server)
                continue
            await port.send(server, sender, event_type, secrets.token_urlsafe(16), messages)

    async def messages_for_sync(
        self, user_id: str, device_id: str, since: int | None, now: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Acknowledge up to `since` (delete), then return the oldest MAX_PER_SYNC
        messages queued up to `now`, and the position they reach: `now`, or the last
        one's when more are left (the response's token must say so).

        Most syncs neither acknowledge anything new nor have anything to deliver: an
        in-memory acknowledgement mark and the stream positions answer those without
        a query."""
        key = (user_id, device_id)
        if since and since > self._acked.get(key, 0):
            await self._store.delete_messages_up_to(user_id, device_id, since)
            if len(self._acked) > 100_000:
                self._acked.clear()
            self._acked[key] = since
        if since is not None and since >= now:
            return [], now
        rows = await self._store.get_messages(
            user_id, device_id, since or 0, now, limit=MAX_PER_SYNC
        )
        reached = rows[-1][0] if len(rows) == MAX_PER_SYNC else now
        return [
            {"sender": m.sender, "type": m.type, "content": m.content} for _, m in rows
        ], reached

    # -- for appservices (MSC2409): delivered in transactions, not by /sync ------------

    async def queued(
        self, user_id: str, device_id: str, upto: int, limit: int
    ) -> list[tuple[int, ToDeviceMessage]]:
        return await self._store.get_messages_limited(user_id, device_id, upto, limit)

    async def acknowledge(self, user_id: str, device_id: str, up_to: int) -> None:
        await self._store.delete_messages_up_to(user_id, device_id, up_to)

    async def recipients_with_messages(self, limit: int) -> list[str]:
        return await self._store.recipients_with_messages(limit)

    async def device_deleted(self, user_id: str, device_id: str) -> None:
        await self._store.delete_device(user_id, device_id)

    async def current_position(self) -> int:
        return await self._store.get_max_position()
