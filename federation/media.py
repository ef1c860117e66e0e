"""Fetching other servers' media for our users (implements homeserver.media.ports).

First the authenticated federation endpoint (spec v1.11):
GET /_matrix/federation/v1/media/download/{mediaId}, whose answer is multipart/mixed:
a JSON part (metadata, unused so far), then either the bytes or a `Location` header
pointing to where they are (fetched unsigned, through the same IP policy, following
at most 5 redirects). A server that does not know the endpoint (404/405/400 with
M_UNRECOGNIZED or no Matrix error) gets the legacy
GET /_matrix/media/v3/download/{serverName}/{mediaId}?allow_remote=false.

Bodies are streamed to the caller's sink (which enforces the size limit), never
decompressed, and the multipart framing is parsed by aiohttp's MultipartReader. The
JSON part is read up to MAX_METADATA_BYTES.
"""

from __future__ import annotations

import json
import logging
from email.message import Message
from typing import Any

import aiohttp
from yarl import URL

from federation.client import FederationClient, FederationError, fed_path
from homeserver.media.ports import RemoteFile, RemoteMediaError, Sink

log = logging.getLogger(__name__)

MAX_METADATA_BYTES = 64 * 1024
CHUNK = 64 * 1024


def _filename(disposition: str | None) -> str | None:
    if not disposition:
        return None
    message = Message()
    message["Content-Disposition"] = disposition
    name = message.get_filename()
    return name if isinstance(name, str) else None


def _check_encoding(headers: Any) -> None:
    encoding = headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise RemoteMediaError(f"unrequested Content-Encoding {encoding[:20]}")


async def _pump(read: Any, sink: Sink) -> None:
    while True:
        chunk = await read(CHUNK)
        if not chunk:
            return
        await sink(chunk)


def _not_found(status: int, body: Any) -> bool:
    errcode = body.get("errcode") if isinstance(body, dict) else None
    return status == 404 and errcode == "M_NOT_FOUND"


def _unsupported(status: int, body: Any) -> bool:
    """The peer does not serve the federation media endpoint (an older server)."""
    errcode = body.get("errcode") if isinstance(body, dict) else None
    if errcode == "M_UNRECOGNIZED":
        return True
    return status in (400, 404, 405, 501) and errcode is None


async def _error_body(resp: aiohttp.ClientResponse) -> Any:
    raw = await resp.content.read(MAX_METADATA_BYTES)
    try:
        return json.loads(raw)
    except ValueError:
        return None


class FederationMediaSource:
    def __init__(self, client: FederationClient) -> None:
        self._client = client

    async def download(
        self, origin: str, media_id: str, sink: Sink, *, max_size: int, timeout_s: float
    ) -> RemoteFile:
        try:
            result = await self._federation_download(origin, media_id, sink, timeout_s)
            if result is not None:
                return result
            return await self._legacy_download(origin, media_id, sink, timeout_s)
        except FederationError as e:
            raise RemoteMediaError(str(e)) from e

    async def _federation_download(
        self, origin: str, media_id: str, sink: Sink, timeout_s: float
    ) -> RemoteFile | None:
        path = fed_path("/_matrix/federation/v1/media/download/{}", media_id)
        async with self._client.stream(origin, path, timeout=timeout_s) as resp:
            if resp.status != 200:
                body = await _error_body(resp)
                if _not_found(resp.status, body):
                    raise RemoteMediaError("not found", not_found=True)
                if _unsupported(resp.status, body):
                    return None
                raise RemoteMediaError(f"HTTP {resp.status} from the federation endpoint")
            _check_encoding(resp.headers)
            if resp.content_type != "multipart/mixed":
                raise RemoteMediaError(f"expected multipart/mixed, got {resp.content_type}")
            reader = aiohttp.MultipartReader(resp.headers, resp.content)
            metadata = await reader.next()
            if not isinstance(metadata, aiohttp.BodyPartReader):
                raise RemoteMediaError("no metadata part")
            size = 0
            while chunk := await metadata.read_chunk(CHUNK):
                size += len(chunk)
                if size > MAX_METADATA_BYTES:
                    raise RemoteMediaError("metadata part too large")
            part = await reader.next()
            if not isinstance(part, aiohttp.BodyPartReader):
                raise RemoteMediaError("no media part")
            location = part.headers.get("Location")
            if location:
                return await self._follow(location, sink, timeout_s)
            _check_encoding(part.headers)
            await _pump(part.read_chunk, sink)
            return RemoteFile(
                part.headers.get("Content-Type"), _filename(part.headers.get("Content-Disposition"))
            )

    async def _follow(self, location: str, sink: Sink, timeout_s: float) -> RemoteFile:
        if not location.startswith(("https://", "http://")):
            raise RemoteMediaError("redirect to a non-HTTP location")
        async with self._client.stream_url(location, timeout=timeout_s) as resp:
            if resp.status != 200:
                raise RemoteMediaError(f"HTTP {resp.status} from the redirect target")
            _check_encoding(resp.headers)
            await _pump(resp.content.read, sink)
            return RemoteFile(
                resp.headers.get("Content-Type"), _filename(resp.headers.get("Content-Disposition"))
            )

    async def _legacy_download(
        self, origin: str, media_id: str, sink: Sink, timeout_s: float
    ) -> RemoteFile:
        path = fed_path("/_matrix/media/v3/download/{}/{}", origin, media_id)
        query = {"allow_remote": "false", "allow_redirect": "true"}
        async with self._client.stream(origin, path, query=query, timeout=timeout_s) as resp:
            if resp.status in (301, 302, 307, 308) and resp.headers.get("Location"):
                location = str(resp.url.join(URL(resp.headers["Location"])))
                return await self._follow(location, sink, timeout_s)
            if resp.status != 200:
                body = await _error_body(resp)
                if resp.status == 404:
                    raise RemoteMediaError("not found", not_found=True)
                raise RemoteMediaError(f"HTTP {resp.status} from the legacy endpoint: {body}")
            _check_encoding(resp.headers)
            await _pump(resp.content.read, sink)
            return RemoteFile(
                resp.headers.get("Content-Type"), _filename(resp.headers.get("Content-Disposition"))
            )
