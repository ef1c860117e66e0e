"""Server-side room key backup: versions and the keys stored in them.

The server keeps the "best" copy of each session key: a verified key beats an
unverified one, then a lower `first_message_index`, then a lower `forwarded_count`.
Writes go to the current (newest) version only; others get M_WRONG_ROOM_KEYS_VERSION.
"""

from __future__ import annotations

from typing import Any

from homeserver.errors import MatrixError, invalid_param, missing_param, not_found
from homeserver.storage.key_backup import BackupKey, BackupVersion, KeyBackupStore

from . import validation as v

MAX_ALGORITHM_LENGTH = 255


def better_key(old: BackupKey, new: BackupKey) -> bool:
    """Whether `new` should replace the stored `old` copy of a session key."""
    if new.is_verified != old.is_verified:
        return new.is_verified
    if new.first_message_index != old.first_message_index:
        return new.first_message_index < old.first_message_index
    return new.forwarded_count < old.forwarded_count


def _parse_version(version: Any) -> int | None:
    if not isinstance(version, str) or not version.isdigit() or len(version) > 18:
        return None
    return int(version)


def _parse_key(room_id: str, session_id: str, data: Any) -> BackupKey:
    name = f"rooms.{room_id}.sessions.{session_id}"
    data = v.require_dict(data, name)
    verified = data.get("is_verified")
    if not isinstance(verified, bool):
        raise MatrixError(400, "M_BAD_JSON", f"{name}.is_verified must be a boolean")
    return BackupKey(
        room_id=v.require_str(room_id, "room ID"),
        session_id=v.require_str(session_id, "session ID"),
        first_message_index=v.require_int(
            data.get("first_message_index"), f"{name}.first_message_index"
        ),
        forwarded_count=v.require_int(data.get("forwarded_count"), f"{name}.forwarded_count"),
        is_verified=verified,
        session_data=v.require_dict(data.get("session_data"), f"{name}.session_data"),
    )


def _auth_data(body: dict[str, Any]) -> Any:
    """`auth_data` is the client's opaque JSON (any type, as Synapse stores it): only
    its presence is checked; the request body limit bounds its size."""
    if body.get("auth_data") is None:
        raise missing_param("auth_data is required")
    return body["auth_data"]


class KeyBackupService:
    def __init__(self, store: KeyBackupStore) -> None:
        self._store = store

    # -- versions ------------------------------------------------------------------------

    async def create_version(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        algorithm = v.require_str(body.get("algorithm"), "algorithm", MAX_ALGORITHM_LENGTH)
        auth_data = _auth_data(body)
        version = await self._store.create_version(user_id, algorithm, auth_data)
        return {"version": str(version)}

    async def _live(self, user_id: str, version: Any) -> BackupVersion:
        number = _parse_version(version)
        found = None if number is None else await self._store.get_version(user_id, number)
        if found is None:
            raise not_found("Unknown backup version")
        return found

    async def get_version(self, user_id: str, version: str | None) -> dict[str, Any]:
        if version is None:
            found = await self._store.get_version(user_id)
            if found is None:
                raise not_found("No current backup version")
        else:
            found = await self._live(user_id, version)
        return {
            "algorithm": found.algorithm,
            "auth_data": found.auth_data,
            "count": await self._store.count_keys(user_id, found.version),
            "etag": str(found.etag),
            "version": str(found.version),
        }

    async def update_version(
        self, user_id: str, version: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        found = await self._live(user_id, version)
        algorithm = v.require_str(body.get("algorithm"), "algorithm", MAX_ALGORITHM_LENGTH)
        auth_data = _auth_data(body)
        if "version" in body and body["version"] != version:
            raise invalid_param("version in body does not match the version in the path")
        if algorithm != found.algorithm:
            raise invalid_param("Algorithm does not match")
        await self._store.update_auth_data(user_id, found.version, auth_data)
        return {}

    async def delete_version(self, user_id: str, version: str) -> dict[str, Any]:
        found = await self._live(user_id, version)
        await self._store.delete_version(user_id, found.version)
        return {}

    # -- keys ----------------------------------------------------------------------------

    async def _counts(self, user_id: str, version: int) -> dict[str, Any]:
        found = await self._store.get_version(user_id, version)
        etag = found.etag if found is not None else 0
        return {"etag": str(etag), "count": await self._store.count_keys(user_id, version)}

    async def put_keys(
        self,
        user_id: str,
        version: Any,
        body: dict[str, Any],
        room_id: str | None = None,
        session_id: str | None = None,
    ) -> dict[str, Any]:
        """PUT /room_keys/keys[/{roomId}[/{sessionId}]] (body shape depends on depth)."""
        current = await self._store.get_version(user_id)
        if current is None:
            raise not_found("No current backup version")
        if _parse_version(version) != current.version:
            raise MatrixError(
                403,
                "M_WRONG_ROOM_KEYS_VERSION",
                "Wrong backup version.",
                current_version=str(current.version),
            )
        keys: list[BackupKey] = []
        if room_id is not None and session_id is not None:
            keys.append(_parse_key(room_id, session_id, body))
        elif room_id is not None:
            sessions = v.require_dict(body.get("sessions"), "sessions")
            keys += [_parse_key(room_id, sid, data) for sid, data in sessions.items()]
        else:
            rooms = v.require_dict(body.get("rooms"), "rooms")
            for rid, room in rooms.items():
                sessions = v.require_dict(
                    v.require_dict(room, f"rooms.{rid}").get("sessions"), f"rooms.{rid}.sessions"
                )
                keys += [_parse_key(rid, sid, data) for sid, data in sessions.items()]
        await self._store.put_keys(user_id, current.version, keys, better_key)
        return await self._counts(user_id, current.version)

    async def get_keys(
        self,
        user_id: str,
        version: Any,
        room_id: str | None = None,
        session_id: str | None = None,
    ) -> dict[str, Any]:
        found = await self._live(user_id, version)
        keys = await self._store.get_keys(user_id, found.version, room_id, session_id)
        if session_id is not None:
            if not keys:
                raise not_found("No room key found for this session")
            return keys[0].to_json()
        if room_id is not None:
            return {"sessions": {k.session_id: k.to_json() for k in keys}}
        rooms: dict[str, Any] = {}
        for k in keys:
            rooms.setdefault(k.room_id, {"sessions": {}})["sessions"][k.session_id] = k.to_json()
        return {"rooms": rooms}

    async def delete_keys(
        self,
        user_id: str,
        version: Any,
        room_id: str | None = None,
        session_id: str | None = None,
    ) -> dict[str, Any]:
        found = await self._live(user_id, version)
        await self._store.delete_keys(user_id, found.version, room_id, session_id)
        return await self._counts(user_id, found.version)
