"""Building the content repository (for the composition module)."""

from __future__ import annotations

from contextlib import AsyncExitStack

from homeserver.background import BackgroundTasks
from homeserver.config import Config
from homeserver.media.files import MediaFiles
from homeserver.media.ports import RemoteMediaSource
from homeserver.media.preview import UrlPreviewer
from homeserver.media.repository import MediaRepository
from homeserver.media.thumbnails import Thumbnails
from homeserver.storage.database import Database
from homeserver.storage.media import MediaStore


def build_media(
    config: Config,
    database: Database,
    stack: AsyncExitStack,
    tasks: BackgroundTasks,
    remote: RemoteMediaSource | None,
) -> tuple[MediaRepository, UrlPreviewer | None]:
    """The media repository (other servers' media through `remote`) and, when
    url_preview_enabled, the URL previewer; their lifetimes go on `stack`."""
    store = MediaStore(database)
    thumbnails = Thumbnails(config.media, store)
    stack.callback(thumbnails.close)
    media = MediaRepository(
        config.media,
        store,
        MediaFiles(config.media.store_path),
        thumbnails,
        config.server_name,
        remote,
        tasks,
    )
    tasks.spawn(
        media.run_housekeeping(background_jobs=config.workers.runs_media_jobs),
        "media housekeeping",
    )
    stack.push_async_callback(media.flush_access_times)
    previewer = None
    if config.media.url_preview_enabled:
        previewer = UrlPreviewer(config.media, media)
        stack.push_async_callback(previewer.close)
    return media, previewer
