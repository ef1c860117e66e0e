"""E2EE services as typed app state, built once per app by `e2ee_ctx`.

`e2ee_ctx` runs after the core services (it is appended to cleanup_ctx by the client
area's setup): it builds the stores and services, registers the sync extension,
advances the notifier to the stored stream maxima, tells other servers about our
users' device changes (DeviceListBroadcaster, once federation sets REMOTE_DEVICE_LISTS)
and installs the default re-authentication check for replacing cross-signing keys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from homeserver.appstate import CONFIG, DATABASE
from homeserver.services import NOTIFIER, ROOM_ACTIVITY, STORES
from homeserver.storage.device_lists import DeviceListStore
from homeserver.storage.e2ee_keys import E2eeKeyStore
from homeserver.storage.key_backup import KeyBackupStore
from homeserver.storage.to_device import ToDeviceStore
from homeserver.sync.extensions import SYNC_EXTENSIONS

from .device_list_edus import DeviceListBroadcaster
from .device_lists import DeviceListService
from .key_backup import KeyBackupService
from .keys import KeysService
from .ports import REMOTE_DEVICE_LISTS, REMOTE_KEYS, REMOTE_TO_DEVICE
from .sync_extension import E2eeSyncExtension
from .to_device import ToDeviceService

E2EE_KEYS = web.AppKey("e2ee_keys", KeysService)
# The one key store of the app (it caches per-device counts; federation shares it).
E2EE_KEY_STORE = web.AppKey("e2ee_key_store", E2eeKeyStore)
TO_DEVICE = web.AppKey("e2ee_to_device", ToDeviceService)
DEVICE_LISTS = web.AppKey("e2ee_device_lists", DeviceListService)
KEY_BACKUP = web.AppKey("e2ee_key_backup", KeyBackupService)


async def e2ee_ctx(app: web.Application) -> AsyncIterator[None]:
    db = app[DATABASE]
    stores = app[STORES]
    notifier = app[NOTIFIER]
    server_name = app[CONFIG].server_name
    device_lists = DeviceListService(DeviceListStore(db), stores.current_state, notifier)
    device_lists.activity = app.get(ROOM_ACTIVITY)
    key_store = E2eeKeyStore(db)
    app[E2EE_KEY_STORE] = key_store
    keys = KeysService(
        key_store,
        stores.accounts,
        device_lists,
        server_name,
        remote=lambda: app.get(REMOTE_KEYS),
    )
    broadcaster = DeviceListBroadcaster(
        key_store, stores.accounts, server_name, remote=lambda: app.get(REMOTE_DEVICE_LISTS)
    )
    device_lists.listeners.append(broadcaster.on_change)
    to_device = ToDeviceService(
        ToDeviceStore(db),
        stores.accounts,
        notifier,
        server_name,
        remote=lambda: app.get(REMOTE_TO_DEVICE),
    )
    notifier.advance("device_lists", await device_lists.current_position())
    notifier.advance("to_device", await to_device.current_position())
    app[DEVICE_LISTS] = device_lists
    app[E2EE_KEYS] = keys
    app[TO_DEVICE] = to_device
    app[KEY_BACKUP] = KeyBackupService(KeyBackupStore(db))
    app[SYNC_EXTENSIONS].append(E2eeSyncExtension(keys, to_device, device_lists))
    yield


async def on_device_deleted(app: web.Application, user_id: str, device_id: str) -> None:
    """Hook for device deletion: drop the device's keys and queued messages and tell
    everyone who shares a room that the user's device list changed."""
    await app[TO_DEVICE].device_deleted(user_id, device_id)
    await app[E2EE_KEYS].device_deleted(user_id, device_id)
