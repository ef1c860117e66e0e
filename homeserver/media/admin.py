"""What server admins do to media (Synapse's admin API): look up, quarantine, protect,
delete, purge the remote cache, list a user's uploads.

Quarantined media is answered 404 to everyone (and over federation) but kept on disk,
so a mistaken quarantine can be undone; protected media (`safe_from_quarantine`) is
never quarantined in bulk. Deleting removes the row, the file and its thumbnails.
"""

from __future__ import annotations

from typing import Any

from homeserver.errors import MatrixError, not_found
from homeserver.media.ids import check_media_ref
from homeserver.media.repository import MediaRepository
from homeserver.storage.media import LocalMedia, MediaStore

# Media deleted by one delete-by-date call (Synapse's API also deletes in one go).
MAX_DELETE_BATCH = 10_000


def media_json(media: LocalMedia) -> dict[str, Any]:
    """A local upload as Synapse's admin API shows it."""
    return {
        "media_id": media.media_id,
        "media_type": media.content_type,
        "media_length": media.media_length,
        "upload_name": media.upload_name,
        "created_ts": media.created_ts,
        "last_access_ts": media.last_access_ts,
        "quarantined_by": media.quarantined_by,
        "safe_from_quarantine": media.safe_from_quarantine,
        "user_id": media.user_id,
        "authenticated": media.authenticated,
        "sha256": media.sha256,
    }


class MediaAdmin:
    def __init__(self, repository: MediaRepository, store: MediaStore) -> None:
        self._repository = repository
        self._store = store
        self.server_name = repository.server_name

    def _is_local(self, server_name: str, media_id: str) -> bool:
        check_media_ref(server_name, media_id)
        return server_name == self.server_name

    async def info(self, server_name: str, media_id: str) -> dict[str, Any]:
        if self._is_local(server_name, media_id):
            media = await self._store.get_local(media_id)
            if media is None:
                raise not_found("Media not found")
            return {"media_info": media_json(media)}
        remote = await self._store.get_remote(server_name, media_id)
        if remote is None:
            raise not_found("Media not found")
        return {
            "media_info": {
                "media_origin": remote.origin,
                "media_id": remote.media_id,
                "media_type": remote.content_type,
                "media_length": remote.media_length,
                "upload_name": remote.upload_name,
                "created_ts": remote.created_ts,
                "last_access_ts": remote.last_access_ts,
                "quarantined_by": remote.quarantined_by,
                "authenticated": remote.authenticated,
            }
        }

    async def quarantine(self, server_name: str, media_id: str, by: str | None) -> None:
        """Quarantine (`by` = the admin) or release (None) one file, local or cached."""
        if self._is_local(server_name, media_id):
            if by is not None:
                media = await self._store.get_local(media_id)
                if media is not None and media.safe_from_quarantine:
                    return  # Synapse: protected media silently stays available
            await self._store.set_local_quarantine([media_id], by)
        else:
            await self._store.set_remote_quarantine(server_name, media_id, by)

    async def quarantine_user_media(self, user_id: str, by: str) -> int:
        ids = await self._store.local_media_ids_of_user(user_id)
        return await self._store.set_local_quarantine(ids, by)

    async def protect(self, media_id: str, protected: bool) -> None:
        check_media_ref(self.server_name, media_id)
        await self._store.set_protected(media_id, protected)

    async def delete(self, server_name: str, media_id: str) -> dict[str, Any]:
        if not self._is_local(server_name, media_id):
            raise MatrixError(400, "M_INVALID_PARAM", "Can only delete local media")
        if not await self._repository.delete_local(media_id):
            raise not_found("Media not found")
        return {"deleted_media": [media_id], "total": 1}

    async def delete_before(
        self, before_ts: int, size_gt: int, keep_profiles: bool
    ) -> dict[str, Any]:
        # Reads are written behind: what was read a moment ago must count as read.
        await self._repository.flush_access_times()
        keep = (
            await self._store.avatar_media_ids(self.server_name) if keep_profiles else frozenset()
        )
        ids = await self._store.local_media_before(before_ts, size_gt, keep, MAX_DELETE_BATCH)
        deleted = [m for m in ids if await self._repository.delete_local(m)]
        return {"deleted_media": deleted, "total": len(deleted)}

    async def delete_user_media(self, user_id: str) -> dict[str, Any]:
        ids = await self._store.local_media_ids_of_user(user_id)
        deleted = [m for m in ids if await self._repository.delete_local(m)]
        return {"deleted_media": deleted, "total": len(deleted)}

    async def purge_remote_cache(self, before_ts: int) -> dict[str, Any]:
        return {"deleted": await self._repository.purge_remote_cache(before_ts)}

    async def user_media(
        self, user_id: str, start: int, limit: int, order_by: str, descending: bool
    ) -> tuple[list[dict[str, Any]], int]:
        rows, total = await self._store.local_media_of_user(
            user_id, start=start, limit=limit, order_by=order_by, descending=descending
        )
        return [media_json(m) for m in rows], total
