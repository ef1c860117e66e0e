"""Telling other servers that one of our users' devices or cross-signing keys changed.

A `DeviceListService` listener: for a change of a local user it sends, to every remote
server with a user sharing a room,

- `m.device_list_update` for a device that was added, changed or deleted: `stream_id`
  is the change's position in our `device_lists` stream and `prev_id` the user's
  previous position, so the receiver can tell whether it missed an update (and then
  re-fetch the whole list from GET /user/devices, which answers the same `stream_id`);
  the current device keys and display name ride along so it need not ask;
- `m.signing_key_update` when the user's master or self-signing key changed.

Only signatures the key's owner made are sent (the same rule as the federation
/user/keys/query answer); user-signing keys never leave the server. Remote users'
changes (recorded when their server told us) are not forwarded.
"""

from __future__ import annotations

from typing import Any

from homeserver.storage.accounts import AccountStore
from homeserver.storage.e2ee_keys import E2eeKeyStore, StoredSignature

from .device_lists import DeviceListChange
from .ports import RemoteDeviceLists

SHARED_CROSS_SIGNING = (("master", "master_key"), ("self_signing", "self_signing_key"))


def _server_of(user_id: str) -> str:
    return user_id.partition(":")[2]


def with_owner_signatures(
    obj: dict[str, Any], target_key_ids: set[str], sigs: list[StoredSignature], owner: str
) -> dict[str, Any]:
    """`obj` with the owner's stored signatures over any of `target_key_ids` added."""
    mine = [s for s in sigs if s.target_key_id in target_key_ids and s.signer_user_id == owner]
    if not mine:
        return obj
    obj = dict(obj)
    merged = {k: dict(v) for k, v in (obj.get("signatures") or {}).items()}
    for s in mine:
        merged.setdefault(s.signer_user_id, {})[s.signer_key_id] = s.signature
    obj["signatures"] = merged
    return obj


def public_key_ids(key: dict[str, Any]) -> set[str]:
    """The IDs a signature of a cross-signing key is stored under (public key, key ID)."""
    keys = key.get("keys")
    if not isinstance(keys, dict):
        return set()
    return {str(v) for v in keys.values()} | {k.partition(":")[2] for k in keys}


def without_device_name(keys: dict[str, Any]) -> dict[str, Any]:
    """Device keys as another server sees them when device names are private
    (`allow_device_name_lookup_over_federation` off): `unsigned.device_display_name`
    left out (a copy; the stored keys may be cached)."""
    unsigned = keys.get("unsigned")
    if not isinstance(unsigned, dict) or "device_display_name" not in unsigned:
        return keys
    rest = {k: v for k, v in unsigned.items() if k != "device_display_name"}
    out = {k: v for k, v in keys.items() if k != "unsigned"}
    if rest:
        out["unsigned"] = rest
    return out


class DeviceListBroadcaster:
    def __init__(
        self,
        keys: E2eeKeyStore,
        accounts: AccountStore,
        server_name: str,
        remote: RemoteDeviceLists | None,
        *,
        share_device_names: bool = False,
    ) -> None:
        """`share_device_names`: updates carry the device's name (off by default, as
        in Synapse: other servers' users would learn "Alice's work laptop")."""
        self._share_names = share_device_names
        self._keys = keys
        self._accounts = accounts
        self._server_name = server_name
        self._remote = remote

    def destinations(self, change: DeviceListChange) -> list[str]:
        """Every other server with a user sharing a room with the changed user."""
        return sorted(
            {_server_of(u) for u in change.interested} - {self._server_name, ""},
        )

    async def on_change(self, change: DeviceListChange) -> None:
        if _server_of(change.user_id) != self._server_name:
            return  # a remote user's change: their server tells everyone itself
        remote = self._remote
        destinations = self.destinations(change)
        if remote is None or not destinations:
            return
        if change.device_id is not None:
            content = await self.device_update(change)
            await remote.send_edu(destinations, "m.device_list_update", content)
        if change.signing_keys:
            keys_update = await self.signing_key_update(change.user_id)
            if keys_update is not None:
                await remote.send_edu(destinations, "m.signing_key_update", keys_update)

    async def device_update(self, change: DeviceListChange) -> dict[str, Any]:
        """The `m.device_list_update` content for the change's device."""
        assert change.device_id is not None
        content: dict[str, Any] = {
            "user_id": change.user_id,
            "device_id": change.device_id,
            "stream_id": change.position,
            "prev_id": [change.previous] if change.previous is not None else [],
            "deleted": change.deleted,
        }
        if change.deleted:
            return content
        device = await self._accounts.get_device(change.user_id, change.device_id)
        if device is None:  # gone again since: say so rather than describe it
            content["deleted"] = True
            return content
        if device.display_name is not None and self._share_names:
            content["device_display_name"] = device.display_name
        keys = await self._keys.get_device_keys_json(change.user_id, change.device_id)
        if keys is not None:
            if not self._share_names:
                keys = without_device_name(keys)
            sigs = await self._keys.get_signatures(change.user_id)
            content["keys"] = with_owner_signatures(keys, {change.device_id}, sigs, change.user_id)
        return content

    async def signing_key_update(self, user_id: str) -> dict[str, Any] | None:
        """The `m.signing_key_update` content (None if the user has no shared keys)."""
        stored = await self._keys.get_cross_signing_keys(user_id)
        content: dict[str, Any] = {"user_id": user_id}
        sigs: list[StoredSignature] | None = None
        for key_type, field in SHARED_CROSS_SIGNING:
            key = stored.get(key_type)
            if key is None:
                continue
            if sigs is None:
                sigs = await self._keys.get_signatures(user_id)
            content[field] = with_owner_signatures(key, public_key_ids(key), sigs, user_id)
        return content if len(content) > 1 else None
