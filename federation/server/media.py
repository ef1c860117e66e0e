"""GET /_matrix/federation/v1/media/{download,thumbnail}/{mediaId} (spec v1.11).

Other servers fetch our users' media here (authenticated with X-Matrix like every
federation request). Only media uploaded to this server is served, never our cache of
a third server's. The answer is multipart/mixed: a JSON object (no metadata defined
yet: `{}`), then the bytes with their Content-Type and Content-Disposition, streamed
from disk.
"""

from __future__ import annotations

from aiohttp import MultipartWriter, hdrs, web

from homeserver.appstate import MEDIA
from homeserver.errors import invalid_param, not_found
from homeserver.http import path_param, query_param
from homeserver.media.headers import content_disposition
from homeserver.media.repository import DEFAULT_WAIT_MS, StoredFile


def _int(value: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise ValueError("expected a positive integer")
    return int(value)


def _multipart(stored: StoredFile) -> web.Response:
    try:
        file = open(stored.path, "rb")  # noqa: SIM115 (closed by the payload when sent)
    except FileNotFoundError:
        raise not_found("Media not found") from None
    writer = MultipartWriter("mixed")
    writer.append_json({})
    # The file is read in chunks on a worker thread while the response is written.
    writer.append(
        file,
        {
            hdrs.CONTENT_TYPE: stored.content_type,
            hdrs.CONTENT_DISPOSITION: content_disposition(stored.content_type, stored.filename),
        },
    )
    return web.Response(body=writer)


async def download(request: web.Request) -> web.Response:
    repository = request.config_dict[MEDIA]
    media_id = str(path_param(request, "media_id"))
    timeout_ms = query_param(request, "timeout_ms", _int, default=DEFAULT_WAIT_MS)
    stored = await repository.download(
        repository.server_name, media_id, allow_remote=False, timeout_ms=timeout_ms
    )
    return _multipart(stored)


async def thumbnail(request: web.Request) -> web.Response:
    repository = request.config_dict[MEDIA]
    media_id = str(path_param(request, "media_id"))
    method = query_param(request, "method", default="scale")
    if method not in ("crop", "scale"):
        raise invalid_param("method must be crop or scale")
    stored = await repository.thumbnail(
        repository.server_name,
        media_id,
        query_param(request, "width", _int, required=True) or 1,
        query_param(request, "height", _int, required=True) or 1,
        method,
        animated=query_param(request, "animated", default="false") == "true",
        allow_remote=False,
        timeout_ms=query_param(request, "timeout_ms", _int, default=DEFAULT_WAIT_MS),
    )
    return _multipart(stored)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/media/download/{media_id}", download)
    app.router.add_get("/v1/media/thumbnail/{media_id}", thumbnail)
