"""Media endpoints (content-repo.yaml; authenticated media, spec v1.11).

/_matrix/client/v1/media/{config,download,thumbnail,preview_url}: signed-in users.
/_matrix/media/v3 (and r0): upload, asynchronous upload (v1/create, then PUT), config
and preview_url with an access token; the legacy unauthenticated download and
thumbnail, which serve only media stored before enable_authenticated_media was on
(Synapse's freeze). The handlers parse and answer; MediaRepository does the work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from homeserver.appstate import CONFIG, MEDIA, RATE_LIMITERS, URL_PREVIEWER, Mounts
from homeserver.client.auth import get_requester
from homeserver.client.routes import client_ip
from homeserver.errors import MatrixError, invalid_param, missing_param
from homeserver.http import body_chunks, json_response, path_param, query_param
from homeserver.media.headers import media_headers
from homeserver.media.repository import DEFAULT_WAIT_MS, StoredFile

CHUNK = 64 * 1024


def _body(request: web.Request) -> AsyncIterator[bytes]:
    return body_chunks(request, CHUNK)


def _bool(value: str) -> bool:
    if value in ("true", "false"):
        return value == "true"
    raise ValueError("expected true or false")


def _int(lo: int, hi: int):  # noqa: ANN202
    def parse(value: str) -> int:
        if not value.isascii() or not value.lstrip("-").isdigit() or len(value) > 12:
            raise ValueError("expected an integer")
        number = int(value)
        if not lo <= number <= hi:
            raise ValueError(f"expected an integer from {lo} to {hi}")
        return number

    return parse


def _timeout_ms(request: web.Request) -> int:
    return query_param(request, "timeout_ms", _int(0, 2**31), default=DEFAULT_WAIT_MS)


def _ref(request: web.Request) -> tuple[str, str]:
    return str(path_param(request, "server_name")), str(path_param(request, "media_id"))


def _send_file(stored: StoredFile, filename: str | None = None) -> web.FileResponse:
    headers = media_headers(stored.content_type, filename or stored.filename)
    return web.FileResponse(stored.path, headers=headers)


# -- upload --------------------------------------------------------------------------------


async def upload(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    filename = query_param(request, "filename")
    uri = await request.config_dict[MEDIA].upload(
        requester.user_id,
        request.headers.get("Content-Type"),
        filename,
        _body(request),
        request.content_length,
    )
    return json_response({"content_uri": uri})


async def create(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    request.config_dict[RATE_LIMITERS].check("media_create", requester.user_id)
    uri, expires = await request.config_dict[MEDIA].create(requester.user_id)
    return json_response({"content_uri": uri, "unused_expires_at": expires})


async def upload_to(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    server_name, media_id = _ref(request)
    await request.config_dict[MEDIA].upload_to(
        requester.user_id,
        server_name,
        media_id,
        request.headers.get("Content-Type"),
        query_param(request, "filename"),
        _body(request),
        request.content_length,
    )
    return json_response({})


async def config(request: web.Request) -> web.Response:
    await get_requester(request)
    return json_response({"m.upload.size": request.config_dict[CONFIG].media.max_upload_size})


# -- download ------------------------------------------------------------------------------


async def _download(request: web.Request, *, legacy: bool) -> web.StreamResponse:
    server_name, media_id = _ref(request)
    allow_remote = query_param(request, "allow_remote", _bool, default=True)
    stored = await request.config_dict[MEDIA].download(
        server_name,
        media_id,
        legacy=legacy,
        allow_remote=allow_remote,
        timeout_ms=_timeout_ms(request),
        requester=client_ip(request),
    )
    return _send_file(stored, request.match_info.get("file_name"))


async def download(request: web.Request) -> web.StreamResponse:
    await get_requester(request)
    return await _download(request, legacy=False)


async def legacy_download(request: web.Request) -> web.StreamResponse:
    return await _download(request, legacy=True)


async def _thumbnail(request: web.Request, *, legacy: bool) -> web.StreamResponse:
    server_name, media_id = _ref(request)
    width = query_param(request, "width", _int(1, 100_000), required=True)
    height = query_param(request, "height", _int(1, 100_000), required=True)
    method = query_param(request, "method", default="scale")
    if method not in ("crop", "scale"):
        raise invalid_param("method must be crop or scale")
    stored = await request.config_dict[MEDIA].thumbnail(
        server_name,
        media_id,
        width,
        height,
        method,
        animated=query_param(request, "animated", _bool, default=False),
        legacy=legacy,
        allow_remote=query_param(request, "allow_remote", _bool, default=True),
        timeout_ms=_timeout_ms(request),
        requester=client_ip(request),
    )
    return _send_file(stored)


async def thumbnail(request: web.Request) -> web.StreamResponse:
    await get_requester(request)
    return await _thumbnail(request, legacy=False)


async def legacy_thumbnail(request: web.Request) -> web.StreamResponse:
    return await _thumbnail(request, legacy=True)


# -- URL previews --------------------------------------------------------------------------


async def preview_url(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    previewer = request.config_dict[URL_PREVIEWER]
    if previewer is None:
        raise MatrixError(404, "M_UNRECOGNIZED", "URL previews are disabled on this server")
    url = query_param(request, "url")
    if not url:
        raise missing_param("Missing query parameter: url")
    ts = query_param(request, "ts", _int(0, 2**62))
    return json_response(await previewer.preview(url, requester.user_id, ts))


def setup(mounts: Mounts) -> None:
    if not mounts.config.media.enable_media_repo:
        return
    client = mounts.client.router
    client.add_get("/v1/media/config", config)
    client.add_get("/v1/media/download/{server_name}/{media_id}", download)
    client.add_get("/v1/media/download/{server_name}/{media_id}/{file_name}", download)
    client.add_get("/v1/media/thumbnail/{server_name}/{media_id}", thumbnail)
    client.add_get("/v1/media/preview_url", preview_url)
    media = mounts.media.router
    media.add_post("/v1/create", create)
    for prefix in ("/v3", "/r0"):
        media.add_post(prefix + "/upload", upload)
        media.add_put(prefix + "/upload/{server_name}/{media_id}", upload_to)
        media.add_get(prefix + "/config", config)
        media.add_get(prefix + "/preview_url", preview_url)
        media.add_get(prefix + "/download/{server_name}/{media_id}", legacy_download)
        media.add_get(prefix + "/download/{server_name}/{media_id}/{file_name}", legacy_download)
        media.add_get(prefix + "/thumbnail/{server_name}/{media_id}", legacy_thumbnail)
