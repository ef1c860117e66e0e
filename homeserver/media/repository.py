"""MediaRepository: uploading, finding and fetching media; what every media route calls.

Local media: an upload streams to disk (never buffered whole, refused past
max_upload_size while it arrives), then gets a row; images get their configured
thumbnails in the background. Asynchronous upload reserves an ID first (at most
`max_pending_media_uploads` unused per user, expiring after `unused_expiration_time`)
and readers of a reserved ID wait for its bytes up to their `timeout_ms`.

Remote media is fetched once through the RemoteMediaSource port and cached on disk;
concurrent requests for the same file share that fetch, at most
MAX_CONCURRENT_REMOTE_FETCHES run at a time, and a failed fetch is remembered briefly
so a client cannot make us hammer a peer.

Media stored while enable_authenticated_media is on is `authenticated`: the legacy
unauthenticated endpoints (legacy=True) answer 404 for it and fetch nothing new.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterable
from dataclasses import dataclass
from pathlib import Path

from homeserver.background import BackgroundTasks
from homeserver.config import MediaConfig
from homeserver.errors import MatrixError, forbidden, limit_exceeded, not_found, too_large
from homeserver.media.files import FileWriter, MediaFiles, TooLarge
from homeserver.media.headers import DEFAULT_CONTENT_TYPE, clean_content_type, clean_filename
from homeserver.media.ids import check_media_ref, is_valid_media_id, new_media_id
from homeserver.media.ports import RemoteMediaError, RemoteMediaSource
from homeserver.media.thumbnails import Source, Thumbnails, is_thumbnailable
from homeserver.ratelimit import RateLimiter
from homeserver.storage.media import LOCAL, LocalMedia, MediaStore, RemoteMedia, Thumbnail

log = logging.getLogger(__name__)

UPLOAD_POLL_S = 0.5  # a waiting download looks again for an upload to another process
DEFAULT_WAIT_MS = 20_000  # how long a download waits for an asynchronous upload
MAX_WAIT_MS = 60_000
MAX_CONCURRENT_REMOTE_FETCHES = 32
REMOTE_FETCH_TIMEOUT_S = 60.0
MAX_REMEMBERED_REMOTE_FAILURES = 10_000
REMOTE_FAILURE_TTL_S = 60.0
# last_access_ts is written behind, in batches; more keys than this flush at once.
ACCESS_FLUSH_INTERVAL_S = 60.0
MAX_PENDING_ACCESS = 50_000


def now_ms() -> int:
    return int(time.time() * 1000)


def not_yet_uploaded() -> MatrixError:
    return MatrixError(504, "M_NOT_YET_UPLOADED", "Media has not been uploaded yet")


@dataclass(frozen=True)
class StoredFile:
    """A file to send: its path and how to describe it."""

    path: Path
    content_type: str
    filename: str | None
    length: int


class MediaRepository:
    def __init__(
        self,
        config: MediaConfig,
        store: MediaStore,
        files: MediaFiles,
        thumbnails: Thumbnails,
        server_name: str,
        remote: RemoteMediaSource | None,
        tasks: BackgroundTasks,
    ) -> None:
        self.config = config
        self.store = store
        self.files = files
        self.thumbnails = thumbnails
        self.server_name = server_name
        self._remote = remote
        self._tasks = tasks
        self._uploaded: dict[str, asyncio.Event] = {}
        self._upload_locks: dict[str, asyncio.Lock] = {}
        self._fetching: dict[tuple[str, str], asyncio.Future[RemoteMedia]] = {}
        self._fetch_slots = asyncio.Semaphore(MAX_CONCURRENT_REMOTE_FETCHES)
        # remote_media_download_*: the bytes of other servers' media each client
        # address may have us fetch (set by the composition; None: unlimited).
        self.download_limiter: RateLimiter | None = None
        self._remote_failures: OrderedDict[tuple[str, str], tuple[float, bool]] = OrderedDict()
        self._accessed_local: set[str] = set()
        self._accessed_remote: set[tuple[str, str]] = set()

    def mxc(self, media_id: str) -> str:
        return f"mxc://{self.server_name}/{media_id}"

    # -- uploading -----------------------------------------------------------------------

    def _check_declared_length(self, declared: int | None) -> None:
        if declared is not None and declared > self.config.max_upload_size:
            raise too_large(f"Upload is larger than {self.config.max_upload_size} bytes")

    async def _receive(
        self, media_id: str, body: AsyncIterable[bytes], declared: int | None
    ) -> FileWriter:
        self._check_declared_length(declared)
        writer = FileWriter(self.files.local(media_id), self.config.max_upload_size)
        try:
            async for chunk in body:
                await writer.write(chunk)
        except TooLarge:
            await writer.abort()
            raise too_large(f"Upload is larger than {self.config.max_upload_size} bytes") from None
        except BaseException:
            await writer.abort()
            raise
        return writer

    async def upload(
        self,
        user_id: str,
        content_type: str | None,
        filename: str | None,
        body: AsyncIterable[bytes],
        declared_length: int | None = None,
    ) -> str:
        """Store an upload; returns its mxc:// URI."""
        media_id = new_media_id()
        await self._check_upload_limits(user_id, declared_length or 0)
        writer = await self._receive(media_id, body, declared_length)
        ctype = clean_content_type(content_type)
        try:
            await self._check_upload_limits(user_id, writer.size)
            await writer.commit()
            await self.store.insert_uploaded(
                media_id,
                user_id,
                ctype,
                clean_filename(filename),
                writer.size,
                writer.sha256,
                self.config.enable_authenticated_media,
                await self._auto_quarantine(writer.sha256),
            )
        except BaseException:
            await writer.abort()
            await self.files.delete(self.files.local(media_id))
            raise
        self._after_upload(media_id, ctype)
        return self.mxc(media_id)

    async def _check_upload_limits(self, user_id: str, size: int) -> None:
        """media_upload_limits: 400 M_RESOURCE_LIMIT_EXCEEDED (Synapse's answer) when
        this upload would take the user past a limit."""
        for period_ms, max_bytes in self.config.upload_limits:
            used = await self.store.uploaded_bytes_since(user_id, now_ms() - period_ms)
            if used + size > max_bytes:
                raise MatrixError(400, "M_RESOURCE_LIMIT_EXCEEDED", "Media upload limit exceeded")

    async def _auto_quarantine(self, sha256: str) -> str | None:
        """Bytes an admin already quarantined stay quarantined under a new media ID."""
        if await self.store.is_quarantined_hash(sha256):
            log.warning("upload matches quarantined media (sha256 %s): quarantined", sha256)
            return "system"
        return None

    async def create(self, user_id: str) -> tuple[str, int]:
        """Reserve a media ID for a later PUT: (mxc URI, unused_expires_at)."""
        now = now_ms()
        pending = await self.store.count_pending(user_id, now)
        if pending >= self.config.max_pending_media_uploads:
            raise limit_exceeded(60_000)
        media_id = new_media_id()
        expires = now + self.config.unused_expiration_time_ms
        await self.store.reserve(media_id, user_id, expires, self.config.enable_authenticated_media)
        return self.mxc(media_id), expires

    async def upload_to(
        self,
        user_id: str,
        server_name: str,
        media_id: str,
        content_type: str | None,
        filename: str | None,
        body: AsyncIterable[bytes],
        declared_length: int | None = None,
    ) -> None:
        """The PUT of an asynchronous upload: fill a reserved ID, once."""
        check_media_ref(server_name, media_id)
        if server_name != self.server_name:
            raise not_found("Media not found")
        self._check_declared_length(declared_length)
        lock = self._upload_locks.setdefault(media_id, asyncio.Lock())
        try:
            async with lock:
                media = await self.store.get_local(media_id)
                if media is None or (
                    media.uploaded_ts is None
                    and media.unused_expires_ts is not None
                    and media.unused_expires_ts <= now_ms()
                ):
                    raise not_found("Media not found")
                if media.user_id != user_id:
                    raise forbidden("You may not upload to this media ID")
                if media.uploaded_ts is not None:
                    raise MatrixError(
                        409, "M_CANNOT_OVERWRITE_MEDIA", "Media ID already has content"
                    )
                await self._check_upload_limits(user_id, declared_length or 0)
                writer = await self._receive(media_id, body, declared_length)
                ctype = clean_content_type(content_type)
                try:
                    await self._check_upload_limits(user_id, writer.size)
                    await writer.commit()
                    done = await self.store.complete_upload(
                        media_id,
                        ctype,
                        clean_filename(filename),
                        writer.size,
                        writer.sha256,
                        await self._auto_quarantine(writer.sha256),
                    )
                except BaseException:
                    await writer.abort()
                    await self.files.delete(self.files.local(media_id))
                    raise
                if not done:  # expired and removed while the body arrived
                    await self.files.delete(self.files.local(media_id))
                    raise not_found("Media not found")
        finally:
            if not lock.locked():
                self._upload_locks.pop(media_id, None)
        event = self._uploaded.pop(media_id, None)
        if event is not None:
            event.set()
        self._after_upload(media_id, ctype)

    def _after_upload(self, media_id: str, content_type: str) -> None:
        if is_thumbnailable(content_type) and self.config.thumbnail_sizes:
            source = self._local_source(media_id, content_type)
            self._tasks.spawn(
                self.thumbnails.make_configured(source, self.files.write_bytes),
                f"thumbnails of {media_id}",
            )

    async def expire_unused(self) -> int:
        return await self.store.expire_unused(now_ms())

    # -- finding local media -------------------------------------------------------------

    def _local_source(self, media_id: str, content_type: str) -> Source:
        return Source(
            LOCAL,
            media_id,
            content_type,
            self.files.local(media_id),
            lambda w, h, t, m: self.files.local_thumbnail(media_id, w, h, t, m),
        )

    async def _local(self, media_id: str, *, legacy: bool, timeout_ms: int) -> LocalMedia:
        if not is_valid_media_id(media_id):
            raise not_found("Media not found")
        media = await self.store.get_local(media_id)
        if media is not None and media.uploaded_ts is None:
            media = await self._wait_for_upload(media, timeout_ms)
        if media is None or media.quarantined_by is not None:
            raise not_found("Media not found")
        if legacy and media.authenticated:
            raise not_found("Media not found")
        self._accessed_local.add(media_id)
        self._flush_if_many()
        return media

    def _flush_if_many(self) -> None:
        if len(self._accessed_local) + len(self._accessed_remote) > MAX_PENDING_ACCESS:
            self._tasks.spawn(self.flush_access_times(), "media access times")

    async def _wait_for_upload(self, media: LocalMedia, timeout_ms: int) -> LocalMedia | None:
        if media.unused_expires_ts is not None and media.unused_expires_ts <= now_ms():
            return None
        event = self._uploaded.setdefault(media.media_id, asyncio.Event())
        deadline = asyncio.get_running_loop().time() + max(0, min(timeout_ms, MAX_WAIT_MS)) / 1000
        while True:
            # Woken at once by an upload to this process; one to another process of the
            # deployment (several media workers) is seen by looking again.
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise not_yet_uploaded()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, UPLOAD_POLL_S))
            current = await self.store.get_local(media.media_id)
            if event.is_set() or (current is not None and current.uploaded_ts is not None):
                return current

    # -- remote media --------------------------------------------------------------------

    def _remote_source(self, media: RemoteMedia) -> Source:
        origin, fs_id = media.origin, media.filesystem_id
        return Source(
            origin,
            media.media_id,
            media.content_type,
            self.files.remote(origin, fs_id),
            lambda w, h, t, m: self.files.remote_thumbnail(origin, fs_id, w, h, t, m),
        )

    def _failed_recently(self, key: tuple[str, str]) -> None:
        entry = self._remote_failures.get(key)
        if entry is None:
            return
        until, was_not_found = entry
        if until < time.monotonic():
            del self._remote_failures[key]
            return
        if was_not_found:
            raise not_found("Media not found")
        raise MatrixError(502, "M_UNKNOWN", "Failed to fetch remote media")

    def _remember_failure(self, key: tuple[str, str], was_not_found: bool) -> None:
        self._remote_failures[key] = (time.monotonic() + REMOTE_FAILURE_TTL_S, was_not_found)
        self._remote_failures.move_to_end(key)
        while len(self._remote_failures) > MAX_REMEMBERED_REMOTE_FAILURES:
            self._remote_failures.popitem(last=False)

    async def _remote_media(
        self,
        origin: str,
        media_id: str,
        *,
        legacy: bool,
        allow_remote: bool,
        requester: str | None = None,
    ) -> RemoteMedia:
        media = await self.store.get_remote(origin, media_id)
        if media is None:
            if not allow_remote or self._remote is None:
                raise not_found("Media not found")
            if legacy and self.config.enable_authenticated_media:
                raise not_found("Media not found")
            if origin.lower() in self.config.prevent_downloads_from:
                raise not_found("Media not found")  # the operator's block (Synapse's answer)
            limiter = self.download_limiter if requester is not None else None
            if limiter is not None and requester is not None:
                limiter.peek(requester)  # 429 once the address's bytes are spent
            media = await self._fetch_shared(origin, media_id)
            if limiter is not None and requester is not None:
                limiter.charge(requester, media.media_length)
        if media.quarantined_by is not None:
            raise not_found("Media not found")
        if legacy and media.authenticated:
            raise not_found("Media not found")
        self._accessed_remote.add((origin, media_id))
        self._flush_if_many()
        return media

    async def _fetch_shared(self, origin: str, media_id: str) -> RemoteMedia:
        key = (origin, media_id)
        self._failed_recently(key)
        running = self._fetching.get(key)
        if running is None:
            running = asyncio.ensure_future(self._fetch(origin, media_id))
            self._fetching[key] = running
            running.add_done_callback(lambda _f: self._fetching.pop(key, None))
        # Shielded: one requester hanging up does not cancel the others' fetch.
        return await asyncio.shield(running)

    async def _fetch(self, origin: str, media_id: str) -> RemoteMedia:
        assert self._remote is not None
        key = (origin, media_id)
        fs_id = new_media_id()
        writer = FileWriter(self.files.remote(origin, fs_id), self.config.max_upload_size)
        async with self._fetch_slots:
            try:
                remote_file = await self._remote.download(
                    origin,
                    media_id,
                    writer.write,
                    max_size=self.config.max_upload_size,
                    timeout_s=REMOTE_FETCH_TIMEOUT_S,
                )
                await writer.commit()
            except RemoteMediaError as e:
                await writer.abort()
                log.info("remote media %s/%s: %s", origin, media_id, e)
                self._remember_failure(key, e.not_found)
                if e.not_found:
                    raise not_found("Media not found") from None
                raise MatrixError(502, "M_UNKNOWN", "Failed to fetch remote media") from None
            except TooLarge:
                await writer.abort()
                self._remember_failure(key, False)
                raise MatrixError(502, "M_TOO_LARGE", "Remote media is too large") from None
            except BaseException:
                await writer.abort()
                raise
        now = now_ms()
        media = RemoteMedia(
            origin=origin,
            media_id=media_id,
            filesystem_id=fs_id,
            content_type=clean_content_type(remote_file.content_type),
            upload_name=clean_filename(remote_file.filename),
            media_length=writer.size,
            created_ts=now,
            last_access_ts=now,
            quarantined_by=None,
            authenticated=self.config.enable_authenticated_media,
        )
        await self.store.insert_remote(media)
        stored = await self.store.get_remote(origin, media_id)
        if stored is not None and stored.filesystem_id != fs_id:
            await self.files.delete(self.files.remote(origin, fs_id))  # lost a race
            return stored
        return media

    # -- what the routes call ------------------------------------------------------------

    async def download(
        self,
        server_name: str,
        media_id: str,
        *,
        legacy: bool = False,
        allow_remote: bool = True,
        timeout_ms: int = DEFAULT_WAIT_MS,
        requester: str | None = None,
    ) -> StoredFile:
        """`requester`: the client's address, charged the bytes of remote media
        fetched for it (remote_media_download_*)."""
        check_media_ref(server_name, media_id)
        if server_name == self.server_name:
            media = await self._local(media_id, legacy=legacy, timeout_ms=timeout_ms)
            return StoredFile(
                self.files.local(media_id),
                media.content_type or DEFAULT_CONTENT_TYPE,
                media.upload_name,
                media.media_length or 0,
            )
        remote = await self._remote_media(
            server_name, media_id, legacy=legacy, allow_remote=allow_remote, requester=requester
        )
        return StoredFile(
            self.files.remote(server_name, remote.filesystem_id),
            remote.content_type,
            remote.upload_name,
            remote.media_length,
        )

    async def thumbnail(
        self,
        server_name: str,
        media_id: str,
        width: int,
        height: int,
        method: str,
        *,
        animated: bool = False,
        legacy: bool = False,
        allow_remote: bool = True,
        timeout_ms: int = DEFAULT_WAIT_MS,
        requester: str | None = None,
    ) -> StoredFile:
        check_media_ref(server_name, media_id)
        if server_name == self.server_name:
            media = await self._local(media_id, legacy=legacy, timeout_ms=timeout_ms)
            source = self._local_source(media_id, media.content_type or DEFAULT_CONTENT_TYPE)
        else:
            remote = await self._remote_media(
                server_name, media_id, legacy=legacy, allow_remote=allow_remote, requester=requester
            )
            source = self._remote_source(remote)
        thumb = await self.thumbnails.find(
            source, width, height, method, animated, self.files.write_bytes
        )
        if thumb is None:
            raise MatrixError(
                400,
                "M_UNKNOWN",
                "Cannot make a thumbnail of this media: it is not a JPEG, PNG, GIF or WebP"
                " image, or it could not be decoded",
            )
        return self._thumbnail_file(source, thumb)

    @staticmethod
    def _thumbnail_file(source: Source, thumb: Thumbnail) -> StoredFile:
        extension = thumb.content_type.rsplit("/", 1)[-1]
        return StoredFile(
            source.thumbnail_path(thumb.width, thumb.height, thumb.content_type, thumb.method),
            thumb.content_type,
            f"thumbnail.{extension}",
            thumb.media_length,
        )

    # -- bookkeeping ---------------------------------------------------------------------

    async def flush_access_times(self) -> None:
        local, remote = list(self._accessed_local), list(self._accessed_remote)
        self._accessed_local.clear()
        self._accessed_remote.clear()
        now = now_ms()
        if local:
            await self.store.touch_local(local, now)
        if remote:
            await self.store.touch_remote(remote, now)

    async def run_housekeeping(self, *, background_jobs: bool) -> None:
        """Forever: write this process's access times behind (every process serving
        media: media_retention and the admin API judge by them, so a read on any
        process counts within ACCESS_FLUSH_INTERVAL_S); with `background_jobs` (the one
        process named by media_instance_running_background_jobs) also forget expired
        reservations and apply media_retention."""
        while True:
            await asyncio.sleep(ACCESS_FLUSH_INTERVAL_S)
            try:
                await self.flush_access_times()
                if background_jobs:
                    await self.expire_unused()
                    await self.apply_retention()
            except Exception:
                log.exception("media housekeeping failed")

    async def apply_retention(self) -> None:
        now = now_ms()
        if self.config.remote_media_lifetime_ms is not None:
            await self.purge_remote_cache(now - self.config.remote_media_lifetime_ms)
        if self.config.local_media_lifetime_ms is not None:
            ids = await self.store.local_media_before(
                now - self.config.local_media_lifetime_ms, 0, frozenset(), 1000
            )
            for media_id in ids:
                await self.delete_local(media_id)

    async def purge_remote_cache(self, before_ts: int) -> int:
        """Delete cached remote media not read since `before_ts` (it is fetched again
        when asked for). Reads are written behind: first this process's."""
        await self.flush_access_times()
        deleted = 0
        while True:
            batch = await self.store.remote_media_before(before_ts, 500)
            if not batch:
                return deleted
            for media in batch:
                await self.store.delete_remote(media.origin, media.media_id)
                await self.files.delete(
                    self.files.remote(media.origin, media.filesystem_id),
                    self.files.remote_thumbnail_dir(media.origin, media.filesystem_id),
                )
                deleted += 1

    async def delete_local(self, media_id: str) -> bool:
        media = await self.store.get_local(media_id)
        if media is None:
            return False
        await self.store.delete_local(media_id)
        await self.files.delete(
            self.files.local(media_id), self.files.local_thumbnail_dir(media_id)
        )
        return True
