"""Remote users' device lists, cached as Synapse caches them.

For a remote user who shares a room with one of ours, the first /keys/query asks
their server for the whole list (`GET /_matrix/federation/v1/user/devices/{userId}`)
and keeps it; their server's `m.device_list_update` EDUs then patch it in place, each
carrying `prev_id`, the stream IDs it follows. When an update does not follow what we
hold (one was missed), the list is marked stale and the next query fetches it again.
Users who share no room with us send us no updates, so they are never cached (their
queries go to `user/keys/query` each time).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.storage.remote_devices import RemoteDeviceCacheStore

log = logging.getLogger(__name__)

# Devices kept per remote user: a server can claim any number; this many is plenty.
MAX_DEVICES_PER_USER = 1000

FetchDevices = Callable[[str], Awaitable[dict[str, Any]]]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def keys_query_sections(answer: dict[str, Any], wanted: list[str]) -> dict[str, Any]:
    """A /user/devices answer as /keys/query sections for its user (`wanted`: device
    IDs, empty for all)."""
    user_id = answer["user_id"]
    devices: dict[str, Any] = {}
    for device in answer.get("devices", [])[:MAX_DEVICES_PER_USER]:
        if not isinstance(device, dict) or not isinstance(device.get("keys"), dict):
            continue
        device_id = device.get("device_id")
        if not isinstance(device_id, str) or (wanted and device_id not in wanted):
            continue
        keys = copy.deepcopy(device["keys"])
        name = device.get("device_display_name")
        if isinstance(name, str):
            keys.setdefault("unsigned", {})["device_display_name"] = name
        devices[device_id] = keys
    out: dict[str, Any] = {"device_keys": {user_id: devices}}
    for field, section in (
        ("master_key", "master_keys"),
        ("self_signing_key", "self_signing_keys"),
    ):
        if isinstance(answer.get(field), dict):
            out[section] = {user_id: answer[field]}
    return out


class RemoteDeviceCache:
    def __init__(self, store: RemoteDeviceCacheStore) -> None:
        self._store = store

    async def lookup(self, user_id: str, fetch: FetchDevices) -> dict[str, Any]:
        """The user's /user/devices answer: cached, or fetched (and cached) when we
        hold none or it is stale. Raises what `fetch` raises."""
        cached = await self._store.get(user_id)
        if cached is not None and not cached.stale:
            return cached.answer
        answer = await fetch(user_id)
        stream_id = _int(answer.get("stream_id")) or 0
        await self._store.put(user_id, stream_id, answer)
        return answer

    async def apply_device_update(self, user_id: str, content: dict[str, Any]) -> None:
        """An `m.device_list_update` from the user's server (origin checked)."""
        cached = await self._store.get(user_id)
        if cached is None:
            return  # nothing held: the next query fetches the whole list anyway
        stream_id = _int(content.get("stream_id"))
        prev = content.get("prev_id")
        if stream_id is None or stream_id <= cached.stream_id:
            return  # a repeat or an old update
        if cached.stale or not isinstance(prev, list) or cached.stream_id not in prev:
            log.info("device list of %s: missed an update, resyncing on next query", user_id)
            await self._store.mark_stale(user_id)
            return
        answer = copy.deepcopy(cached.answer)
        device_id = content.get("device_id")
        devices = [
            d
            for d in answer.get("devices", [])
            if isinstance(d, dict) and d.get("device_id") != device_id
        ]
        if content.get("deleted") is not True and isinstance(content.get("keys"), dict):
            entry: dict[str, Any] = {"device_id": device_id, "keys": content["keys"]}
            if isinstance(content.get("device_display_name"), str):
                entry["device_display_name"] = content["device_display_name"]
            devices.append(entry)
        elif content.get("deleted") is not True:
            # A change we cannot apply (no keys given): fetch the list again.
            await self._store.mark_stale(user_id)
            return
        answer["devices"] = devices[:MAX_DEVICES_PER_USER]
        answer["stream_id"] = stream_id
        await self._store.put(user_id, stream_id, answer)

    async def apply_signing_key_update(self, user_id: str, content: dict[str, Any]) -> None:
        """An `m.signing_key_update`: the user's cross-signing keys changed."""
        cached = await self._store.get(user_id)
        if cached is None:
            return
        answer = copy.deepcopy(cached.answer)
        for field in ("master_key", "self_signing_key"):
            if isinstance(content.get(field), dict):
                answer[field] = content[field]
        await self._store.put(user_id, cached.stream_id, answer)
