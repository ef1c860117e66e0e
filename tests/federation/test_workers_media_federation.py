"""Other servers' downloads of our media in a worker deployment (issue 16): nginx sends
`/_matrix/federation/v1/media/...` to the media workers, which hold the store (as
Synapse's), so a remote user reads our users' files while the main and the federation
inbound worker are both down. The media worker authenticates the request like any
federation endpoint."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from federation.appkeys import FED_CLIENT
from tests.federation.multiserver import LoopbackServer, started
from tests.federation.test_media_federation import get, jpeg, upload


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[tuple[LoopbackServer, LoopbackServer]]:
    a = LoopbackServer(tmp_path, "a", deployment=True, media_workers=1)
    b = LoopbackServer(tmp_path, "b", deployment=False)
    async with started(a, b) as pair:
        yield pair


async def test_the_media_worker_serves_other_servers_without_main_or_inbound_worker(
    servers: Any,
) -> None:
    a, b = servers
    alice = await a.register("alice")
    bob = await b.register("bob")
    data = jpeg((800, 600))
    ref = (await upload(a, alice, data, "image/jpeg", "cat.jpg")).removeprefix("mxc://")
    media_id = ref.split("/")[1]
    for name in ("main", "federation_inbound1"):
        a.deployment.kill(name)
    try:
        # Nobody but the media worker is left to answer a's federation media.
        async with b.http.get(f"http://{a.name}/_matrix/federation/v1/version") as r:
            assert r.status == 502
        status, headers, body = await get(b, bob, f"/download/{ref}")
        assert (status, body) == (200, data)
        assert headers["Content-Disposition"] == "inline; filename=cat.jpg"
        assert f"/_matrix/federation/v1/media/download/{media_id}" in a.deployment.logs(
            "media_repository1"
        )
        # b makes its own thumbnails from the download; a server asking a for one (a
        # request signed by b's key) gets it from the media worker too.
        path = f"/_matrix/federation/v1/media/thumbnail/{media_id}?width=320&height=240"
        async with b.app[FED_CLIENT].stream(a.name, path) as resp:
            assert resp.status == 200, await resp.text()
            reader = aiohttp.MultipartReader(resp.headers, resp.content)
            assert await (await reader.next()).json() == {}
            part = await reader.next()
            assert part.headers["Content-Type"] == "image/jpeg"
            assert Image.open(io.BytesIO(await part.read())).size == (320, 240)
        assert f"/_matrix/federation/v1/media/thumbnail/{media_id}" in (
            a.deployment.logs("media_repository1")
        )
        # An unsigned request is refused there, as on any federation endpoint.
        url = f"http://{a.name}/_matrix/federation/v1/media/download/{media_id}"
        async with b.http.get(url) as r:
            assert r.status == 401
            assert (await r.json())["errcode"] == "M_UNAUTHORIZED"
    finally:
        for name in ("main", "federation_inbound1"):
            await asyncio.to_thread(a.deployment.start_process, name)
