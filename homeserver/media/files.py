"""The media store folder: where each file lives, and writing one without buffering it.

Layout (media IDs split so no folder grows huge):
  local_content/ab/cd/<rest of id>
  local_thumbnails/ab/cd/<rest>/<w>-<h>-<type>-<subtype>-<method>
  remote_content/<origin>/ab/cd/<rest of filesystem id>
  remote_thumbnails/<origin>/ab/cd/<rest>/<w>-<h>-<type>-<subtype>-<method>

Callers pass only validated IDs and origins (homeserver.media.ids); `_inside` checks
once more that every path stays under the store. Files appear atomically: a writer
fills a temporary file next to its destination and renames it on commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import shutil
from pathlib import Path
from typing import BinaryIO

from homeserver.media.ids import is_valid_media_id, is_valid_origin

# Bytes gathered before one write on a worker thread: the memory an upload holds.
WRITE_BATCH = 256 * 1024


class TooLarge(Exception):
    """More bytes than the writer's limit."""


class MediaFiles:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _inside(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        if self.root not in path.parents:
            raise ValueError(f"media path outside the store: {parts!r}")
        return path

    @staticmethod
    def _split(file_id: str) -> tuple[str, str, str]:
        if not is_valid_media_id(file_id) or len(file_id) < 5:
            raise ValueError(f"bad media file id {file_id!r}")
        return file_id[:2], file_id[2:4], file_id[4:]

    @staticmethod
    def _origin(origin: str) -> str:
        if not is_valid_origin(origin):
            raise ValueError(f"bad media origin {origin!r}")
        return origin

    def local(self, media_id: str) -> Path:
        return self._inside("local_content", *self._split(media_id))

    def remote(self, origin: str, filesystem_id: str) -> Path:
        return self._inside("remote_content", self._origin(origin), *self._split(filesystem_id))

    @staticmethod
    def _thumb_name(width: int, height: int, content_type: str, method: str) -> str:
        kind = content_type.replace("/", "-")
        if not all(c.isalnum() or c in "-+." for c in kind) or method not in ("crop", "scale"):
            raise ValueError(f"bad thumbnail {content_type!r} {method!r}")
        return f"{int(width)}-{int(height)}-{kind}-{method}"

    def local_thumbnail(
        self, media_id: str, width: int, height: int, content_type: str, method: str
    ) -> Path:
        name = self._thumb_name(width, height, content_type, method)
        return self._inside("local_thumbnails", *self._split(media_id), name)

    def remote_thumbnail(
        self,
        origin: str,
        filesystem_id: str,
        width: int,
        height: int,
        content_type: str,
        method: str,
    ) -> Path:
        name = self._thumb_name(width, height, content_type, method)
        return self._inside(
            "remote_thumbnails", self._origin(origin), *self._split(filesystem_id), name
        )

    def local_thumbnail_dir(self, media_id: str) -> Path:
        return self._inside("local_thumbnails", *self._split(media_id))

    def remote_thumbnail_dir(self, origin: str, filesystem_id: str) -> Path:
        return self._inside("remote_thumbnails", self._origin(origin), *self._split(filesystem_id))

    async def delete(self, *paths: Path) -> None:
        """Remove files and folders (missing ones are fine)."""

        def remove() -> None:
            for path in paths:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

        await asyncio.to_thread(remove)

    async def write_bytes(self, path: Path, data: bytes) -> None:
        writer = FileWriter(path, limit=len(data))
        try:
            await writer.write(data)
            await writer.commit()
        finally:
            await writer.abort()


class FileWriter:
    """Streams bytes into `path` through a temporary file, counting and hashing them.

    Holds at most 2 * WRITE_BATCH bytes in memory; more than `limit` bytes raise TooLarge
    (the caller answers 413 and calls abort()). Disk writes run on worker threads.
    """

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._tmp = path.parent / f".tmp-{secrets.token_hex(8)}"
        self._file: BinaryIO | None = None
        self._done = False
        self._inflight: asyncio.Future[None] | None = None

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self._tmp, "wb")  # noqa: SIM115 (closed in commit/abort)

    def _write(self, data: bytes) -> None:
        # On a worker thread: hashlib and file writes release the GIL for big buffers.
        self._sha256.update(data)
        if self._file is None:
            self._open()
        assert self._file is not None
        self._file.write(data)

    async def write(self, chunk: bytes) -> None:
        if self._done:
            raise RuntimeError("writer already finished")
        self.size += len(chunk)
        if self.size > self.limit:
            raise TooLarge(f"more than {self.limit} bytes")
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._pending_size >= WRITE_BATCH:
            await self._flush()

    async def _flush(self) -> None:
        """Hand the gathered bytes to a worker thread without waiting for it, so the
        next batch arrives while this one is hashed and written (at most one batch in
        flight: 2 * WRITE_BATCH bytes held)."""
        await self._drain()
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        self._inflight = asyncio.ensure_future(asyncio.to_thread(self._write, data))

    async def _drain(self) -> None:
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            await inflight

    async def commit(self) -> None:
        """Make the file appear at `path` (complete, never partial)."""
        await self._flush()
        await self._drain()

        def finish() -> None:
            if self._file is None:
                self._open()
            assert self._file is not None
            self._file.close()
            os.replace(self._tmp, self.path)

        await asyncio.to_thread(finish)
        self._done = True

    async def abort(self) -> None:
        """Drop the temporary file (a no-op after commit)."""
        if self._done:
            return
        self._done = True
        self._pending.clear()
        with contextlib.suppress(Exception):  # a failed write: the file goes anyway
            await self._drain()

        def drop() -> None:
            if self._file is not None:
                self._file.close()
            self._tmp.unlink(missing_ok=True)

        await asyncio.to_thread(drop)
