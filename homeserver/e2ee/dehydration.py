"""Dehydrated devices (MSC3814, unstable prefix org.matrix.msc3814.v1), as Synapse serves them.

A client stores an encrypted device of the user (its Olm account pickled with a key from
secret storage) on the server: a device with keys but no access token, so other users'
clients keep encrypting to it while every real device of the user is offline. A new login
downloads it, decrypts what was sent to it and deletes it (then uploads a fresh one).
Element Web and Element X do this when /.well-known/matrix/client says
`"org.matrix.msc3814": true` (extra_well_known_client_content) and GET
/dehydrated_device answers M_NOT_FOUND rather than M_UNRECOGNIZED.

- PUT: replaces the user's dehydrated device: the old one is deleted like any device
  (its keys and queued to-device messages go, other servers hear of it), then the new one
  is created with its device keys, one-time and fallback keys. Everything is checked
  before anything changes, and an ID that names one of the user's other devices is
  refused (it would take over that device's keys).
- GET / DELETE: the device's ID and data; deleting it.
- POST .../{device_id}/events: the to-device messages queued for it, 100 at a time; the
  `next_batch` of one answer, sent with the next request, acknowledges (deletes) what it
  covered, as /sync's token does for a device.

Bounds: one dehydrated device per user; its data at most MAX_DEVICE_DATA_BYTES (a
pickled account is a few kilobytes); keys as /keys/upload bounds them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from canonicaljson import encode_canonical_json

from homeserver.errors import MatrixError, forbidden, invalid_param, not_found
from homeserver.rooms.keyed_lock import KeyedLock
from homeserver.storage.accounts import AccountStore
from homeserver.storage.dehydrated_devices import DehydratedDeviceStore

from . import validation as v
from .keys import KeysService
from .to_device import ToDeviceService

MAX_DEVICE_DATA_BYTES = 1 << 20
MAX_DEVICE_ID_LENGTH = 255
DeleteDevices = Callable[[str, Sequence[str]], Awaitable[None]]


class DehydratedDevices:
    def __init__(
        self,
        store: DehydratedDeviceStore,
        accounts: AccountStore,
        keys: KeysService,
        to_device: ToDeviceService,
    ) -> None:
        self._store = store
        self._accounts = accounts
        self._keys = keys
        self._to_device = to_device
        self._delete_devices: DeleteDevices | None = None
        # One change of a user's dehydrated device at a time: two PUTs racing would each
        # delete the old one and create theirs, and the loser's device would stay behind
        # (keys and all) as nobody's dehydrated device. With workers every request for
        # it goes to the main, so a lock in memory is the user's.
        self._per_user = KeyedLock()

    def bind(self, delete_devices: DeleteDevices) -> None:
        """SessionService.delete_devices (built later): a replaced dehydrated device is
        deleted as any device is, with every area's hooks."""
        self._delete_devices = delete_devices

    async def put(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self._per_user.hold(user_id):
            return await self._put(user_id, body)

    async def _put(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        device_id = body.get("device_id")
        if not isinstance(device_id, str) or not 0 < len(device_id) <= MAX_DEVICE_ID_LENGTH:
            raise invalid_param("'device_id' must be a string of 1 to 255 characters")
        data = v.require_dict(body.get("device_data"), "device_data")
        if not isinstance(data.get("algorithm"), str):
            raise invalid_param("'device_data.algorithm' must be a string")
        if len(encode_canonical_json(data)) > MAX_DEVICE_DATA_BYTES:
            raise MatrixError(413, "M_TOO_LARGE", "'device_data' is too large")
        name = body.get("initial_device_display_name")
        if name is not None and (not isinstance(name, str) or len(name) > 1024):
            raise invalid_param("'initial_device_display_name' must be a short string")
        if "device_keys" not in body:
            raise MatrixError(400, "M_MISSING_PARAM", "'device_keys' must be given")
        # Checked before anything changes (upload checks again, cheaply).
        v.validate_device_keys(body["device_keys"], user_id, device_id)
        for name_ in ("one_time_keys", "fallback_keys"):
            if body.get(name_) is not None:
                v.validate_key_map(body[name_], name_)
        old = await self._store.get(user_id)
        replacing_itself = old is not None and old[0] == device_id
        if not replacing_itself and await self._accounts.get_device(user_id, device_id):
            raise invalid_param("'device_id' names another device of this user")
        if old is not None:
            await self._delete(user_id, old[0])
        await self._accounts.upsert_device(user_id, device_id, name)
        names = ("device_keys", "one_time_keys", "fallback_keys")
        keys: dict[str, Any] = {k: body[k] for k in names if k in body}
        await self._keys.upload(user_id, device_id, keys)
        await self._store.set(user_id, device_id, data)
        return {"device_id": device_id}

    async def get(self, user_id: str) -> dict[str, Any]:
        current = await self._store.get(user_id)
        if current is None:
            raise not_found("No dehydrated device")
        return {"device_id": current[0], "device_data": current[1]}

    async def delete(self, user_id: str) -> dict[str, Any]:
        async with self._per_user.hold(user_id):
            current = await self._store.get(user_id)
            if current is None:
                raise not_found("No dehydrated device")
            await self._delete(user_id, current[0])
        return {"device_id": current[0]}

    async def _delete(self, user_id: str, device_id: str) -> None:
        if self._delete_devices is None:
            raise MatrixError(503, "M_UNKNOWN", "Not ready")
        await self._delete_devices(user_id, [device_id])  # its hooks call device_deleted
        await self._store.forget(user_id, device_id)

    async def events(self, user_id: str, device_id: str, next_batch: Any) -> dict[str, Any]:
        current = await self._store.get(user_id)
        if current is None or current[0] != device_id:
            raise forbidden("You may only fetch messages for your dehydrated device")
        since = None
        if next_batch is not None:
            if (
                not isinstance(next_batch, str)
                or not next_batch.startswith("d")
                or not next_batch[1:].isdigit()
                or len(next_batch) > 20
            ):
                raise invalid_param("'next_batch' is not one of ours")
            since = int(next_batch[1:])
        now = await self._to_device.current_position()
        events, reached = await self._to_device.messages_for_sync(user_id, device_id, since, now)
        return {"events": events, "next_batch": f"d{reached}"}

    async def device_deleted(self, user_id: str, device_id: str) -> None:
        """A device hook: the dehydrated device deleted some other way (DELETE /devices,
        deactivation) is forgotten too."""
        await self._store.forget(user_id, device_id)
