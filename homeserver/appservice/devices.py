"""What an appservice's own devices need in its transactions, for bridges that encrypt.

- To-device messages (MSC2409, `de.sorunome.msc2409.to_device`) sent to a user of the
  appservice's namespace, for appservices with `receive_ephemeral`: each entry carries
  `to_user_id` and `to_device_id`. They stay queued in the database until a transaction
  holding them was accepted (then they are deleted, as a sync's `since` would), so a
  restart of either side loses none: at start the queues of namespace users are read.
- For appservices whose registration says `org.matrix.msc3202: true`: the one-time key
  counts and unused fallback key types of namespace users' devices whose keys were
  claimed (`org.matrix.msc3202.device_one_time_keys_count`,
  `org.matrix.msc3202.device_unused_fallback_key_types`), and the users whose device lists
  changed among those sharing a room with a namespace user
  (`org.matrix.msc3202.device_lists.changed`).

Bounds: at most MAX_TO_DEVICE messages, MAX_KEY_DEVICES devices' counts and
MAX_CHANGED users per transaction; what is left goes in the next one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from homeserver.appservice.registry import AppService, AppServices

MAX_TO_DEVICE = 100
MAX_KEY_DEVICES = 100
MAX_CHANGED = 1000
MAX_RESUME_USERS = 10_000


@dataclass
class _Pending:
    to_device_users: set[str] = field(default_factory=set)
    keys: set[tuple[str, str]] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)


@dataclass
class DeviceData:
    """One transaction's share: the body fields, and what to delete once accepted."""

    fields: dict[str, Any]
    delivered: list[tuple[str, str, int]]  # (user, device, up to stream id)


class AppServiceDevices:
    def __init__(self, services: AppServices, to_device: Any, keys: Any, accounts: Any) -> None:
        self._services = services
        self._to_device = to_device
        self._keys = keys
        self._accounts = accounts
        self._pending = {s.id: _Pending() for s in services.all}

    @staticmethod
    def wants_to_device(service: AppService) -> bool:
        return service.config.receive_ephemeral and service.config.url is not None

    @staticmethod
    def wants_keys(service: AppService) -> bool:
        return service.config.msc3202 and service.config.url is not None

    def _owners(self, user_id: str) -> list[AppService]:
        return [s for s in self._services.all if s.is_user_in_namespace(user_id)]

    # -- what happened -----------------------------------------------------------------

    def to_device_queued(self, users: tuple[str, ...]) -> list[AppService]:
        """Messages were queued for `users`; the appservices to wake."""
        woken: list[AppService] = []
        for user in users:
            for service in self._owners(user):
                if self.wants_to_device(service):
                    self._pending[service.id].to_device_users.add(user)
                    woken.append(service)
        return woken

    def key_claimed(self, user_id: str, device_id: str) -> list[AppService]:
        woken: list[AppService] = []
        for service in self._owners(user_id):
            if self.wants_keys(service):
                self._pending[service.id].keys.add((user_id, device_id))
                woken.append(service)
        return woken

    def devices_changed(self, user_id: str, interested: frozenset[str]) -> list[AppService]:
        """`user_id`'s devices changed; `interested`: the local users sharing a room."""
        woken: list[AppService] = []
        for service in self._services.all:
            if self.wants_keys(service) and any(
                service.is_user_in_namespace(u) for u in interested
            ):
                changed = self._pending[service.id].changed
                if len(changed) < 10 * MAX_CHANGED:
                    changed.add(user_id)
                woken.append(service)
        return woken

    async def resume(self) -> list[AppService]:
        """After a restart: namespace users who still have messages queued."""
        users = await self._to_device.recipients_with_messages(MAX_RESUME_USERS)
        return self.to_device_queued(tuple(users))

    def has_pending(self, service: AppService) -> bool:
        p = self._pending[service.id]
        return bool(p.to_device_users or p.keys or p.changed)

    # -- a transaction's share -----------------------------------------------------------

    async def take(self, service: AppService, upto: int = 2**62) -> DeviceData:
        """The fields for the next transaction (nothing is deleted until `delivered`;
        a failed transaction is retried as it is, with the same ID)."""
        pending = self._pending[service.id]
        fields: dict[str, Any] = {}
        delivered: list[tuple[str, str, int]] = []
        messages: list[dict[str, Any]] = []
        for user in sorted(pending.to_device_users):
            exhausted = True
            for device in await self._accounts.get_devices(user):
                room = MAX_TO_DEVICE - len(messages)
                if room <= 0:
                    exhausted = False
                    break
                rows = await self._to_device.queued(user, device.device_id, upto, room)
                if len(rows) == room:
                    exhausted = False
                for _, m in rows:
                    messages.append(
                        {
                            "type": m.type,
                            "sender": m.sender,
                            "content": m.content,
                            "to_user_id": user,
                            "to_device_id": device.device_id,
                        }
                    )
                if rows:
                    delivered.append((user, device.device_id, rows[-1][0]))
            if exhausted:
                pending.to_device_users.discard(user)
            if len(messages) >= MAX_TO_DEVICE:
                break
        if messages:
            fields["de.sorunome.msc2409.to_device"] = messages
        if pending.keys:
            counts: dict[str, dict[str, Any]] = {}
            fallback: dict[str, dict[str, Any]] = {}
            for user, device in sorted(pending.keys)[:MAX_KEY_DEVICES]:
                pending.keys.discard((user, device))
                counts.setdefault(user, {})[device] = await self._keys.one_time_key_counts(
                    user, device
                )
                fallback.setdefault(user, {})[device] = await self._keys.unused_fallback_key_types(
                    user, device
                )
            fields["org.matrix.msc3202.device_one_time_keys_count"] = counts
            fields["org.matrix.msc3202.device_unused_fallback_key_types"] = fallback
        if pending.changed:
            changed = sorted(pending.changed)[:MAX_CHANGED]
            pending.changed.difference_update(changed)
            fields["org.matrix.msc3202.device_lists"] = {"changed": changed, "left": []}
        return DeviceData(fields, delivered)

    async def delivered(self, data: DeviceData) -> None:
        """The transaction was accepted: its to-device messages are done."""
        for user, device, up_to in data.delivered:
            await self._to_device.acknowledge(user, device, up_to)
