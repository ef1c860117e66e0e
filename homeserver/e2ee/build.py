"""Building the end-to-end encryption services (one step of the composition)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from homeserver.e2ee.dehydration import DehydratedDevices
from homeserver.e2ee.device_list_edus import DeviceListBroadcaster
from homeserver.e2ee.device_lists import DeviceListService
from homeserver.e2ee.key_backup import KeyBackupService
from homeserver.e2ee.keys import KeysService
from homeserver.e2ee.remote_device_cache import RemoteDeviceCache
from homeserver.e2ee.to_device import ToDeviceService
from homeserver.storage.database import Database
from homeserver.storage.dehydrated_devices import DehydratedDeviceStore
from homeserver.storage.device_lists import DeviceListStore
from homeserver.storage.e2ee_keys import E2eeKeyStore
from homeserver.storage.key_backup import KeyBackupStore
from homeserver.storage.remote_devices import RemoteDeviceCacheStore
from homeserver.storage.stores import Stores
from homeserver.storage.to_device import ToDeviceStore
from homeserver.sync.activity import RoomActivity
from homeserver.sync.notifier import Notifier


@dataclass
class E2ee:
    key_store: E2eeKeyStore
    device_lists: DeviceListService
    remote_device_cache: RemoteDeviceCache
    keys: KeysService
    to_device: ToDeviceService
    key_backup: KeyBackupService
    dehydrated: DehydratedDevices

    async def device_deleted(self, user_id: str, device_id: str) -> None:
        await self.to_device.device_deleted(user_id, device_id)
        await self.keys.device_deleted(user_id, device_id)
        await self.dehydrated.device_deleted(user_id, device_id)


async def build_e2ee(
    database: Database,
    stores: Stores,
    notifier: Notifier,
    activity: RoomActivity,
    server_name: str,
    sender: Any,
    remote_keys: Any,
    remote_to_device: Any,
    *,
    share_device_names: bool = False,
) -> E2ee:
    """`sender` (outbound federation), `remote_keys` and `remote_to_device` (ports the
    federation adapter implements) are None without federation."""
    key_store = E2eeKeyStore(database)
    broadcaster = DeviceListBroadcaster(
        key_store, stores.accounts, server_name, sender, share_device_names=share_device_names
    )
    device_lists = DeviceListService(
        DeviceListStore(database),
        stores.current_state,
        notifier,
        activity,
        listeners=[broadcaster.on_change],
    )
    remote_device_cache = RemoteDeviceCache(RemoteDeviceCacheStore(database))
    keys = KeysService(
        key_store,
        stores.accounts,
        device_lists,
        server_name,
        remote_keys,
        remote_device_cache,
    )
    to_device = ToDeviceService(
        ToDeviceStore(database),
        stores.accounts,
        notifier,
        server_name,
        remote_to_device,
    )
    notifier.advance("device_lists", await device_lists.current_position())
    notifier.advance("to_device", await to_device.current_position())
    return E2ee(
        key_store,
        device_lists,
        remote_device_cache,
        keys,
        to_device,
        KeyBackupService(KeyBackupStore(database)),
        DehydratedDevices(DehydratedDeviceStore(database), stores.accounts, keys, to_device),
    )
