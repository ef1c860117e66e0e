"""Thumbnails of stored media: which stored one answers a request, making missing ones.

Decoding runs on a small thread pool (`RENDER_THREADS`), never on the event loop; the
pool bounds both CPU and memory (one decoded image is at most max_image_pixels * 4
bytes per thread). Making the configured sizes of one file happens once however many
requests ask at the same time, and a file that failed to decode is remembered for a
while instead of being decoded again on every request.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from homeserver.config import MediaConfig
from homeserver.media.thumbnailer import (
    THUMBNAIL_SOURCE_TYPES,
    Rendered,
    ThumbnailError,
    render,
)
from homeserver.storage.media import MediaStore, Thumbnail

RENDER_THREADS = 2
# Files that failed to decode, remembered (bounded) for FAILURE_TTL_S.
MAX_REMEMBERED_FAILURES = 10_000
FAILURE_TTL_S = 600.0
# Largest side of a dynamic (exact-size) thumbnail.
MAX_DYNAMIC_SIDE = 2048

# (width, height, content_type, method) -> where that thumbnail's file goes
PathFor = Callable[[int, int, str, str], Path]


@dataclass(frozen=True)
class Source:
    """One stored file that thumbnails are made of."""

    origin: str  # "" for local media
    media_id: str
    content_type: str
    path: Path
    thumbnail_path: PathFor


def is_thumbnailable(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() in THUMBNAIL_SOURCE_TYPES


def select(thumbnails: list[Thumbnail], width: int, height: int, method: str) -> Thumbnail | None:
    """The stored thumbnail that best answers a request for width x height.

    Thumbnails made with the asked method come first. Among them, for `crop` the
    closest aspect ratio wins, then one covering the asked size, then the closest size;
    for `scale` the smallest one that reaches the asked box in some dimension (a scaled
    thumbnail keeps the source's ratio, so it rarely fills both), else the largest.
    """
    same = [t for t in thumbnails if t.method == method] or thumbnails
    if not same:
        return None

    def covers(t: Thumbnail) -> bool:
        if method == "crop":
            return t.width >= width and t.height >= height
        return t.width >= width or t.height >= height

    if method == "crop":
        return min(
            same,
            key=lambda t: (
                abs(width * t.height - height * t.width) * 1000 // max(1, t.width * t.height),
                not covers(t),
                abs(t.width * t.height - width * height),
                t.media_length,
            ),
        )
    covering = [t for t in same if covers(t)]
    if covering:
        return min(covering, key=lambda t: (t.width * t.height, t.media_length))
    return max(same, key=lambda t: (t.width * t.height, -t.media_length))


class Thumbnails:
    def __init__(self, config: MediaConfig, store: MediaStore) -> None:
        self._config = config
        self._store = store
        self._pool = ThreadPoolExecutor(RENDER_THREADS, thread_name_prefix="thumbnail")
        self._making: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._failed: OrderedDict[tuple[str, str], float] = OrderedDict()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _render(
        self, path: Path, sizes: list[tuple[int, int, str]], animated: bool = False
    ) -> list[Rendered]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, render, path, sizes, self._config.max_image_pixels, animated
        )

    def _remember_failure(self, key: tuple[str, str]) -> None:
        self._failed[key] = time.monotonic() + FAILURE_TTL_S
        self._failed.move_to_end(key)
        while len(self._failed) > MAX_REMEMBERED_FAILURES:
            self._failed.popitem(last=False)

    def _recently_failed(self, key: tuple[str, str]) -> bool:
        until = self._failed.get(key)
        if until is None:
            return False
        if until < time.monotonic():
            del self._failed[key]
            return False
        return True

    async def _store_rendered(
        self,
        source: Source,
        rendered: list[Rendered],
        write: Callable[[Path, bytes], Awaitable[None]],
    ) -> list[Thumbnail]:
        out = []
        for r in rendered:
            thumb = Thumbnail(r.width, r.height, r.method, r.content_type, len(r.data))
            await write(source.thumbnail_path(r.width, r.height, r.content_type, r.method), r.data)
            await self._store.add_thumbnail(source.origin, source.media_id, thumb)
            out.append(thumb)
        return out

    async def make_configured(
        self, source: Source, write: Callable[[Path, bytes], Awaitable[None]]
    ) -> None:
        """Make the configured sizes of `source` once (concurrent callers share it)."""
        if not is_thumbnailable(source.content_type) or not self._config.thumbnail_sizes:
            return
        key = (source.origin, source.media_id)
        if self._recently_failed(key):
            return
        running = self._making.get(key)
        if running is not None:
            await asyncio.shield(running)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._making[key] = future
        try:
            sizes = [(s.width, s.height, s.method) for s in self._config.thumbnail_sizes]
            try:
                rendered = await self._render(source.path, sizes)
            except ThumbnailError:
                self._remember_failure(key)
                return
            await self._store_rendered(source, rendered, write)
        finally:
            del self._making[key]
            future.set_result(None)

    async def find(
        self,
        source: Source,
        width: int,
        height: int,
        method: str,
        animated: bool,
        write: Callable[[Path, bytes], Awaitable[None]],
    ) -> Thumbnail | None:
        """The thumbnail to serve, making it if needed; None if the file has none."""
        if not is_thumbnailable(source.content_type):
            return None
        if animated and source.content_type.startswith(("image/gif", "image/webp", "image/png")):
            return await self._exact(source, width, height, method, animated=True, write=write)
        running = self._making.get((source.origin, source.media_id))
        if running is not None:  # the configured sizes are being stored one by one
            await asyncio.shield(running)
        stored = await self._store.thumbnails(source.origin, source.media_id)
        stored = [t for t in stored if t.content_type != "image/webp" or animated]
        if self._config.dynamic_thumbnails:
            exact = [t for t in stored if t.method == method and _answers(t, width, height)]
            if exact:
                return exact[0]
            made = await self._exact(source, width, height, method, animated=False, write=write)
            if made is not None:
                return made
        if not stored:
            await self.make_configured(source, write)
            stored = await self._store.thumbnails(source.origin, source.media_id)
            stored = [t for t in stored if t.content_type != "image/webp"]
        return select(stored, width, height, method)

    async def _exact(
        self,
        source: Source,
        width: int,
        height: int,
        method: str,
        *,
        animated: bool,
        write: Callable[[Path, bytes], Awaitable[None]],
    ) -> Thumbnail | None:
        key = (source.origin, source.media_id)
        if self._recently_failed(key):
            return None
        width = max(1, min(width, MAX_DYNAMIC_SIDE))
        height = max(1, min(height, MAX_DYNAMIC_SIDE))
        stored = await self._store.thumbnails(source.origin, source.media_id)
        for t in stored:
            if (
                t.method == method
                and _answers(t, width, height)
                and ((t.content_type == "image/webp") == animated)
            ):
                return t
        try:
            rendered = await self._render(source.path, [(width, height, method)], animated)
        except ThumbnailError:
            self._remember_failure(key)
            return None
        # (An animation asked of a still image comes back as a still thumbnail.)
        made = await self._store_rendered(source, rendered, write)
        return made[0] if made else None


def _answers(t: Thumbnail, width: int, height: int) -> bool:
    """Whether stored `t` is what rendering width x height made: a crop has that exact
    size; a scale fills the box in one dimension."""
    if t.method == "crop":
        return (t.width, t.height) == (width, height)
    return (t.width == width and t.height <= height) or (t.height == height and t.width <= width)
