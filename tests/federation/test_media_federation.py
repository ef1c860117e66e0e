"""Media over federation (issue 12): our users read another server's media through
their own server, which fetches it once with the authenticated federation endpoint
(multipart/mixed), caches it and thumbnails it; and a hostile or old peer: huge bodies,
redirects to blocked addresses, servers without the endpoint, missing media."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import MultipartWriter, web
from PIL import Image

from tests.federation.multiserver import LoopbackServer
from tests.ports import free_port

V1 = "/_matrix/client/v1/media"


async def upload(server: LoopbackServer, user: str, data: bytes, ctype: str, name: str) -> str:
    url = f"http://{server.name}/_matrix/media/v3/upload"
    headers = {"Authorization": f"Bearer {server.tokens[user]}", "Content-Type": ctype}
    async with server.http.post(url, data=data, headers=headers, params={"filename": name}) as r:
        body = await r.json()
        assert r.status == 200, body
        return body["content_uri"]


async def get(
    server: LoopbackServer, user: str, path: str, **params: str
) -> tuple[int, Any, bytes]:
    url = f"http://{server.name}{V1}{path}"
    headers = {"Authorization": f"Bearer {server.tokens[user]}"}
    async with server.http.get(url, headers=headers, params=params) as r:
        return r.status, r.headers, await r.read()


def jpeg(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, "JPEG")
    return out.getvalue()


async def test_a_user_reads_another_servers_image_and_its_thumbnail(pair: Any) -> None:
    a, b = pair
    alice = await a.register("alice")
    bob = await b.register("bob")
    data = jpeg((1200, 900))
    mxc = await upload(a, alice, data, "image/jpeg", "holiday.jpg")
    ref = mxc[len("mxc://") :]

    status, headers, body = await get(b, bob, f"/download/{ref}")
    assert status == 200 and body == data
    assert headers["Content-Type"] == "image/jpeg"
    assert headers["Content-Disposition"] == "inline; filename=holiday.jpg"

    status, headers, body = await get(b, bob, f"/thumbnail/{ref}", width="320", height="240")
    assert status == 200
    assert Image.open(io.BytesIO(body)).size == (320, 240)

    # Cached now: served without asking a again.
    status, _, body = await get(b, bob, "/download/" + ref, allow_remote="false")
    assert status == 200 and body == data


async def test_unknown_remote_media_is_404(pair: Any) -> None:
    a, b = pair
    bob = await b.register("bob")
    status, _, body = await get(b, bob, f"/download/{a.name}/doesnotexist")
    assert status == 404, body


class FakePeer:
    """A server that answers media requests as a test tells it to; counts requests."""

    def __init__(self) -> None:
        self.port = free_port()
        self.name = f"127.0.0.1:{self.port}"
        self.hits: dict[str, int] = {}
        self.handler: Callable[[web.Request], Any] | None = None
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def any_request(request: web.Request) -> web.StreamResponse:
            self.hits[request.path] = self.hits.get(request.path, 0) + 1
            assert self.handler is not None
            return await self.handler(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", any_request)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def peer() -> AsyncIterator[FakePeer]:
    fake = FakePeer()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def multipart(data: bytes, ctype: str = "image/png", **part_headers: str) -> web.Response:
    writer = MultipartWriter("mixed")
    writer.append_json({})
    headers = {"Content-Type": ctype, **part_headers}
    writer.append(data, headers)
    return web.Response(body=writer)


async def test_concurrent_requests_share_one_fetch(loopback: Any, peer: FakePeer) -> None:
    b = await loopback("b")
    bob = await b.register("bob")
    data = os.urandom(200_000)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return multipart(
            data,
            "application/octet-stream",
            **{"Content-Disposition": "attachment; filename=x.bin"},
        )

    peer.handler = slow
    results = await asyncio.gather(
        *(get(b, bob, f"/download/{peer.name}/shared") for _ in range(10))
    )
    assert all(status == 200 and body == data for status, _, body in results)
    assert peer.hits == {"/_matrix/federation/v1/media/download/shared": 1}
    assert results[0][1]["Content-Disposition"] == "attachment; filename=x.bin"


async def test_a_huge_remote_file_is_cut_off_and_not_kept(
    loopback: Any, peer: FakePeer, tmp_path: Path
) -> None:
    b = await loopback("b", max_upload_size="1M")
    bob = await b.register("bob")

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "multipart/mixed; boundary=xyz"})
        await resp.prepare(request)
        await resp.write(b"--xyz\r\nContent-Type: application/json\r\n\r\n{}\r\n")
        await resp.write(b"--xyz\r\nContent-Type: application/octet-stream\r\n\r\n")
        try:
            for _ in range(200):  # 12.8 MB offered
                await resp.write(b"z" * 65536)
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass
        return resp

    peer.handler = huge
    status, _, body = await get(b, bob, f"/download/{peer.name}/huge")
    assert status == 502, body
    stored = [p for p in (b.dir / "media_store").rglob("*") if p.is_file()]
    assert stored == []


async def test_a_redirect_to_a_blocked_address_is_not_followed(
    loopback: Any, peer: FakePeer
) -> None:
    b = await loopback("b")
    bob = await b.register("bob")

    async def redirect(request: web.Request) -> web.Response:
        writer = MultipartWriter("mixed")
        writer.append_json({})
        writer.append(b"", {"Location": "http://169.254.169.254/latest/meta-data/"})
        return web.Response(body=writer)

    peer.handler = redirect
    status, _, body = await get(b, bob, f"/download/{peer.name}/metadata")
    assert status == 502, body


async def test_an_older_server_is_asked_on_the_legacy_endpoint(
    loopback: Any, peer: FakePeer
) -> None:
    b = await loopback("b")
    bob = await b.register("bob")

    async def old_server(request: web.Request) -> web.Response:
        if request.path.startswith("/_matrix/federation/"):
            return web.json_response({"errcode": "M_UNRECOGNIZED", "error": "?"}, status=404)
        assert request.query["allow_remote"] == "false"
        return web.Response(
            body=b"old bytes",
            headers={"Content-Type": "text/plain", "Content-Disposition": "inline; filename=o.txt"},
        )

    peer.handler = old_server
    status, headers, body = await get(b, bob, f"/download/{peer.name}/legacy")
    assert status == 200 and body == b"old bytes"
    assert headers["Content-Disposition"] == "inline; filename=o.txt"
    assert peer.hits == {
        "/_matrix/federation/v1/media/download/legacy": 1,
        f"/_matrix/media/v3/download/{peer.name}/legacy": 1,
    }


async def test_a_missing_remote_file_is_404_and_remembered(loopback: Any, peer: FakePeer) -> None:
    b = await loopback("b")
    bob = await b.register("bob")

    async def missing(request: web.Request) -> web.Response:
        return web.json_response({"errcode": "M_NOT_FOUND", "error": "no"}, status=404)

    peer.handler = missing
    for _ in range(3):
        status, _, _ = await get(b, bob, f"/download/{peer.name}/gone")
        assert status == 404
    assert peer.hits == {"/_matrix/federation/v1/media/download/gone": 1}


@pytest.mark.parametrize("blocked", [True, False], ids=["prevented", "other_server_prevented"])
async def test_media_of_a_prevented_server_is_never_fetched(loopback: Any, blocked: bool) -> None:
    """prevent_media_downloads_from (Synapse's): b refuses to download a's media (404;
    a is never asked); a list naming another server changes nothing."""
    a = await loopback("a")
    b = await loopback("b", prevent_media_downloads_from=[a.name if blocked else "x.test"])
    alice = await a.register("alice")
    bob = await b.register("bob")
    ref = (await upload(a, alice, jpeg((64, 64)), "image/jpeg", "x.jpg"))[len("mxc://") :]
    status, _, body = await get(b, bob, f"/download/{ref}")
    assert status == (404 if blocked else 200), body


async def test_a_client_address_spends_its_remote_download_allowance(loopback: Any) -> None:
    """remote_media_download_* (Synapse's): the bytes of other servers' media one
    client address has us fetch; past the burst, 429 until it drains, while media
    already held is still served."""
    a = await loopback("a")
    b = await loopback(
        "b",
        rc_enabled=True,
        remote_media_download_burst_count="100K",
        remote_media_download_per_second=1,
    )
    alice = await a.register("alice")
    bob = await b.register("bob")
    refs = []
    for i in range(3):
        data = bytes([i]) * 60_000
        mxc = await upload(a, alice, data, "application/octet-stream", f"f{i}")
        refs.append(mxc[len("mxc://") :])
    assert (await get(b, bob, f"/download/{refs[0]}"))[0] == 200  # 60K spent
    assert (await get(b, bob, f"/download/{refs[1]}"))[0] == 200  # fits the check: 100K spent
    status, headers, body = await get(b, bob, f"/download/{refs[2]}")
    assert status == 429 and b"M_LIMIT_EXCEEDED" in body
    assert (await get(b, bob, f"/download/{refs[0]}"))[0] == 200  # held: no fetch, no charge
