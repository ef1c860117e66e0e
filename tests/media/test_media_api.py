"""The content repository through the client API (issue 12): uploads and downloads,
the authenticated-media freeze, asynchronous upload, size limits while streaming, and
hostile media references."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.app import create_app
from tests.client.helpers import auth, deployed, make_user

V1 = "/_matrix/client/v1/media"
V3 = "/_matrix/media/v3"


@pytest.fixture
async def media_client(aiohttp_client: Any, tmp_config: Any) -> TestClient:
    return await aiohttp_client(create_app(tmp_config(max_upload_size="1M")))


async def upload(
    client: TestClient, token: str, data: bytes, content_type: str = "image/png", **query: str
) -> str:
    resp = await client.post(
        f"{V3}/upload",
        data=data,
        headers={**auth(token), "Content-Type": content_type},
        params=query,
    )
    body = await resp.json()
    assert resp.status == 200, body
    assert body["content_uri"].startswith("mxc://test.local/")
    return body["content_uri"][len("mxc://") :]


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


async def test_upload_then_download_returns_the_same_bytes_with_safe_headers(
    media_client: TestClient,
) -> None:
    _, token, _ = await make_user(media_client, "alice")
    data = os.urandom(300_000)
    ref = await upload(media_client, token, data, "image/png", filename="cat.png")
    resp = await media_client.get(f"{V1}/download/{ref}", headers=auth(token))
    assert resp.status == 200
    assert await resp.read() == data
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.headers["Content-Disposition"] == "inline; filename=cat.png"
    assert "sandbox" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    # A file name in the path overrides the stored one.
    resp = await media_client.get(f"{V1}/download/{ref}/other%20name.png", headers=auth(token))
    assert resp.headers["Content-Disposition"] == "inline; filename*=utf-8''other%20name.png"


@pytest.mark.parametrize(
    ("content_type", "disposition"),
    [
        ("text/html", "attachment"),
        ("image/svg+xml", "attachment"),
        ("application/javascript", "attachment"),
        ("video/mp4", "inline"),
        ("text/plain", "inline"),
    ],
)
async def test_only_safe_types_are_shown_inline(
    media_client: TestClient, content_type: str, disposition: str
) -> None:
    _, token, _ = await make_user(media_client, "alice")
    ref = await upload(media_client, token, b"<script>alert(1)</script>", content_type)
    resp = await media_client.get(f"{V1}/download/{ref}", headers=auth(token))
    assert resp.status == 200
    assert resp.headers["Content-Disposition"] == disposition
    assert resp.headers["Content-Type"].startswith(content_type)


async def test_authenticated_endpoints_need_a_token(media_client: TestClient) -> None:
    _, token, _ = await make_user(media_client, "alice")
    ref = await upload(media_client, token, b"hello", "text/plain")
    for path in (
        f"{V1}/download/{ref}",
        f"{V1}/thumbnail/{ref}?width=32&height=32",
        f"{V1}/config",
    ):
        resp = await media_client.get(path)
        assert resp.status == 401
        assert (await resp.json())["errcode"] == "M_MISSING_TOKEN"
    resp = await media_client.post(f"{V3}/upload", data=b"x")
    assert resp.status == 401


async def test_legacy_download_is_frozen_for_media_uploaded_with_authenticated_media(
    media_client: TestClient,
) -> None:
    _, token, _ = await make_user(media_client, "alice")
    ref = await upload(media_client, token, b"hello", "text/plain")
    resp = await media_client.get(f"{V3}/download/{ref}")
    assert resp.status == 404
    assert (await resp.json())["errcode"] == "M_NOT_FOUND"


async def test_legacy_download_serves_media_when_authenticated_media_is_off(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    client = await aiohttp_client(create_app(tmp_config(enable_authenticated_media=False)))
    _, token, _ = await make_user(client, "alice")
    ref = await upload(client, token, b"hello", "text/plain")
    resp = await client.get(f"{V3}/download/{ref}")
    assert resp.status == 200 and await resp.read() == b"hello"


async def test_config_reports_the_upload_limit(media_client: TestClient) -> None:
    _, token, _ = await make_user(media_client, "alice")
    for path in (f"{V1}/config", f"{V3}/config"):
        resp = await media_client.get(path, headers=auth(token))
        assert await resp.json() == {"m.upload.size": 1024 * 1024}


async def test_declared_oversize_upload_is_refused_before_the_body(
    media_client: TestClient, tmp_path: Path
) -> None:
    _, token, _ = await make_user(media_client, "alice")
    resp = await media_client.post(
        f"{V3}/upload",
        data=b"x" * (1024 * 1024 + 1),
        headers={**auth(token), "Content-Type": "application/octet-stream"},
    )
    assert resp.status == 413
    assert (await resp.json())["errcode"] == "M_TOO_LARGE"
    assert files_under(tmp_path / "media_store") == []


async def test_streamed_oversize_upload_is_cut_off_without_buffering_it(
    media_client: TestClient, tmp_path: Path
) -> None:
    """No Content-Length (chunked): the limit is enforced as the bytes arrive, and the
    partial file is removed."""
    _, token, _ = await make_user(media_client, "alice")
    sent = 0

    async def body():  # type: ignore[no-untyped-def]
        nonlocal sent
        for _ in range(64):  # 4 MB offered, 1 MB allowed
            sent += 65536
            yield b"y" * 65536

    resp = await media_client.post(
        f"{V3}/upload", data=body(), headers={**auth(token), "Content-Type": "text/plain"}
    )
    assert resp.status == 413
    assert (await resp.json())["errcode"] == "M_TOO_LARGE"
    assert files_under(tmp_path / "media_store") == []


@pytest.mark.parametrize(
    ("path", "status", "errcode"),
    [
        ("/download/test.local/..%2F..%2Fhomeserver.db", 404, "M_NOT_FOUND"),
        ("/download/test.local/abc%00def", 400, "M_INVALID_PARAM"),
        ("/download/test.local/nosuchmedia", 404, "M_NOT_FOUND"),
        ("/download/..%2F..%2Fetc/passwd", 400, "M_INVALID_PARAM"),
        ("/download/bad%20server/abcdef", 400, "M_INVALID_PARAM"),
        ("/thumbnail/test.local/nosuchmedia?width=32&height=32", 404, "M_NOT_FOUND"),
        ("/thumbnail/test.local/x?width=abc&height=32", 400, "M_INVALID_PARAM"),
        ("/thumbnail/test.local/x?height=32", 400, "M_MISSING_PARAM"),
        ("/thumbnail/test.local/x?width=3&height=3&method=zoom", 400, "M_INVALID_PARAM"),
    ],
)
async def test_hostile_media_references_are_matrix_errors(
    media_client: TestClient, path: str, status: int, errcode: str
) -> None:
    _, token, _ = await make_user(media_client, "alice")
    resp = await media_client.get(V1 + path, headers=auth(token))
    assert resp.status == status, await resp.text()
    if deployed(media_client) and "%00" in path:
        errcode = "M_UNRECOGNIZED"  # nginx refuses a NUL before any of our processes
    assert (await resp.json())["errcode"] == errcode


async def test_asynchronous_upload(media_client: TestClient) -> None:
    _, alice, _ = await make_user(media_client, "alice")
    _, bob, _ = await make_user(media_client, "bob")
    resp = await media_client.post("/_matrix/media/v1/create", headers=auth(alice))
    body = await resp.json()
    assert resp.status == 200, body
    assert body["unused_expires_at"] > 0
    ref = body["content_uri"][len("mxc://") :]

    # Not uploaded yet: a reader waits, then gets 504 M_NOT_YET_UPLOADED.
    resp = await media_client.get(f"{V1}/download/{ref}?timeout_ms=50", headers=auth(alice))
    assert resp.status == 504
    assert (await resp.json())["errcode"] == "M_NOT_YET_UPLOADED"

    # A reader that waits long enough gets the bytes as soon as they arrive.
    waiting = asyncio.ensure_future(
        media_client.get(f"{V1}/download/{ref}?timeout_ms=10000", headers=auth(bob))
    )
    await asyncio.sleep(0.1)
    resp = await media_client.put(
        f"{V3}/upload/{ref}",
        data=b"late bytes",
        headers={**auth(bob), "Content-Type": "text/plain"},
    )
    assert resp.status == 403
    assert (await resp.json())["errcode"] == "M_FORBIDDEN"
    resp = await media_client.put(
        f"{V3}/upload/{ref}?filename=a.txt",
        data=b"late bytes",
        headers={**auth(alice), "Content-Type": "text/plain"},
    )
    assert resp.status == 200 and await resp.json() == {}
    got = await asyncio.wait_for(waiting, 5)
    assert got.status == 200 and await got.read() == b"late bytes"
    assert got.headers["Content-Disposition"] == "inline; filename=a.txt"

    resp = await media_client.put(
        f"{V3}/upload/{ref}", data=b"again", headers={**auth(alice), "Content-Type": "text/plain"}
    )
    assert resp.status == 409
    assert (await resp.json())["errcode"] == "M_CANNOT_OVERWRITE_MEDIA"
    resp = await media_client.put(
        f"{V3}/upload/test.local/neverreserved", data=b"x", headers=auth(alice)
    )
    assert resp.status == 404


async def test_pending_asynchronous_uploads_are_limited(media_client: TestClient) -> None:
    _, alice, _ = await make_user(media_client, "alice")
    for _ in range(5):
        resp = await media_client.post("/_matrix/media/v1/create", headers=auth(alice))
        assert resp.status == 200
    resp = await media_client.post("/_matrix/media/v1/create", headers=auth(alice))
    assert resp.status == 429
    assert (await resp.json())["errcode"] == "M_LIMIT_EXCEEDED"


async def test_concurrent_uploads_all_survive(media_client: TestClient) -> None:
    _, token, _ = await make_user(media_client, "alice")
    blobs = [os.urandom(20_000 + i) for i in range(20)]
    refs = await asyncio.gather(*(upload(media_client, token, b, "application/zip") for b in blobs))
    assert len(set(refs)) == 20
    for ref, blob in zip(refs, blobs, strict=True):
        resp = await media_client.get(f"{V1}/download/{ref}", headers=auth(token))
        assert await resp.read() == blob
        assert resp.headers["Content-Disposition"] == "attachment"


async def test_media_upload_limits_per_user(aiohttp_client: Any, tmp_config: Any) -> None:
    client = await aiohttp_client(
        create_app(tmp_config(media_upload_limits=[{"time_period": "1d", "max_size": 1000}]))
    )
    _, alice, _ = await make_user(client, "alice")
    _, bob, _ = await make_user(client, "bob")
    await upload(client, alice, b"a" * 600, "text/plain")
    resp = await client.post(
        f"{V3}/upload", data=b"a" * 600, headers={**auth(alice), "Content-Type": "text/plain"}
    )
    assert resp.status == 400
    assert (await resp.json())["errcode"] == "M_RESOURCE_LIMIT_EXCEEDED"
    await upload(client, alice, b"a" * 400, "text/plain")  # exactly up to the limit
    await upload(client, bob, b"b" * 900, "text/plain")  # limits are per user


async def test_bytes_of_quarantined_media_stay_quarantined_under_a_new_id(
    media_client: TestClient,
) -> None:
    from homeserver.appstate import STORES

    _, alice, _ = await make_user(media_client, "alice")
    admin_id, admin, _ = await make_user(media_client, "admin")
    await media_client.server.app[STORES].accounts.set_admin(admin_id, True)
    bad = await upload(media_client, alice, b"forbidden bytes", "image/png")
    resp = await media_client.post(
        f"/_synapse/admin/v1/media/quarantine/{bad}", json={}, headers=auth(admin)
    )
    assert resp.status == 200, await resp.text()
    again = await upload(media_client, alice, b"forbidden bytes", "image/png")
    resp = await media_client.get(f"{V1}/download/{again}", headers=auth(alice))
    assert resp.status == 404
    fine = await upload(media_client, alice, b"other bytes", "image/png")
    resp = await media_client.get(f"{V1}/download/{fine}", headers=auth(alice))
    assert resp.status == 200
