"""Synapse's media admin API (issue 12): media info, quarantine (one file, a user's
files; protected files stay), delete one / by date / a user's, purge of the remote
cache, a user's media list with paging. A non-admin gets 403 everywhere."""

from __future__ import annotations

import time
from pathlib import Path

from homeserver.appstate import MEDIA
from homeserver.storage.media import RemoteMedia
from tests.admin.conftest import AdminEnv
from tests.client.helpers import auth, deployed

V1 = "/_matrix/client/v1/media"


async def upload(env: AdminEnv, data: bytes, ctype: str = "text/plain", name: str = "f") -> str:
    resp = await env.client.post(
        "/_matrix/media/v3/upload",
        data=data,
        params={"filename": name},
        headers={**env.user, "Content-Type": ctype},
    )
    body = await resp.json()
    assert resp.status == 200, body
    return body["content_uri"].rsplit("/", 1)[1]


async def download_status(env: AdminEnv, media_id: str) -> int:
    resp = await env.client.get(f"{V1}/download/test.local/{media_id}", headers=env.user)
    return resp.status


async def test_non_admins_are_refused(env: AdminEnv) -> None:
    media_id = await upload(env, b"x")
    for method, path in [
        ("GET", f"/v1/media/test.local/{media_id}"),
        ("POST", f"/v1/media/quarantine/test.local/{media_id}"),
        ("DELETE", f"/v1/media/test.local/{media_id}"),
        ("POST", "/v1/purge_media_cache?before_ts=1"),
        ("GET", f"/v1/users/{env.user_id}/media"),
    ]:
        status, body = await env.call(method, path, token="user")
        assert status == 403 and body["errcode"] == "M_FORBIDDEN", path
    assert await download_status(env, media_id) == 200


async def test_info_and_quarantine_round_trip(env: AdminEnv) -> None:
    media_id = await upload(env, b"hello", name="hello.txt")
    status, body = await env.call("GET", f"/v1/media/test.local/{media_id}")
    assert status == 200
    info = body["media_info"]
    assert info["media_id"] == media_id and info["media_length"] == 5
    assert info["upload_name"] == "hello.txt" and info["user_id"] == env.user_id
    assert info["quarantined_by"] is None

    assert (await env.call("POST", f"/v1/media/quarantine/test.local/{media_id}"))[0] == 200
    assert await download_status(env, media_id) == 404
    status, body = await env.call("GET", f"/v1/media/test.local/{media_id}")
    assert body["media_info"]["quarantined_by"] == env.admin_id
    assert (await env.call("POST", f"/v1/media/unquarantine/test.local/{media_id}"))[0] == 200
    assert await download_status(env, media_id) == 200


async def test_protected_media_survives_a_users_quarantine(env: AdminEnv) -> None:
    kept = await upload(env, b"keep")
    other = await upload(env, b"other")
    assert (await env.call("POST", f"/v1/media/protect/{kept}"))[0] == 200
    status, body = await env.call("POST", f"/v1/user/{env.user_id}/media/quarantine")
    assert status == 200 and body == {"num_quarantined": 1}
    assert await download_status(env, kept) == 200
    assert await download_status(env, other) == 404


async def test_delete_one_removes_row_file_and_thumbnails(env: AdminEnv, tmp_path: Path) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (200, 200)).save(buf, "PNG")
    media_id = await upload(env, buf.getvalue(), "image/png")
    resp = await env.client.get(
        f"{V1}/thumbnail/test.local/{media_id}?width=32&height=32&method=crop", headers=env.user
    )
    assert resp.status == 200
    # The server's media folder: this test's, or a deployment's (its generated config).
    deployment = getattr(env.client.server, "deployment", None)
    store = deployment.workdir / "data/media_store" if deployment else tmp_path / "media_store"
    assert any(media_id[4:] in str(p) for p in store.rglob("*") if p.is_file())
    status, body = await env.call("DELETE", f"/v1/media/test.local/{media_id}")
    assert status == 200 and body == {"deleted_media": [media_id], "total": 1}
    assert await download_status(env, media_id) == 404
    assert not any(media_id[4:] in str(p) for p in store.rglob("*") if p.is_file())
    status, body = await env.call("DELETE", f"/v1/media/test.local/{media_id}")
    assert status == 404
    status, body = await env.call("DELETE", "/v1/media/elsewhere.org/abcdef")
    assert status == 400


async def test_delete_by_date_keeps_avatars_and_recent_media(env: AdminEnv) -> None:
    old = await upload(env, b"old file")
    avatar = await upload(env, b"avatar")
    resp = await env.client.put(
        f"/_matrix/client/v3/profile/{env.user_id}/avatar_url",
        json={"avatar_url": f"mxc://test.local/{avatar}"},
        headers=env.user,
    )
    assert resp.status == 200
    if not deployed(env.client):  # (a deployment's processes flush their own)
        await env.client.server.app[MEDIA].flush_access_times()
    cutoff = int(time.time() * 1000) + 1000
    time.sleep(0.01)
    status, body = await env.call("POST", f"/v1/media/delete?before_ts={cutoff}")
    assert status == 200 and body == {"deleted_media": [old], "total": 1}
    assert await download_status(env, old) == 404
    assert await download_status(env, avatar) == 200
    status, body = await env.call("POST", "/v1/media/delete")
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"


async def test_user_media_list_pages_and_deletes(env: AdminEnv) -> None:
    ids = [await upload(env, b"x" * (i + 1), name=f"f{i}") for i in range(5)]
    status, body = await env.call(
        "GET", f"/v1/users/{env.user_id}/media?limit=2&order_by=media_length&dir=b"
    )
    assert status == 200 and body["total"] == 5 and body["next_token"] == 2
    assert [m["media_id"] for m in body["media"]] == [ids[4], ids[3]]
    status, body = await env.call(
        "GET", f"/v1/users/{env.user_id}/media?from=4&limit=2&order_by=media_length&dir=b"
    )
    assert [m["media_id"] for m in body["media"]] == [ids[0]] and "next_token" not in body
    status, body = await env.call("DELETE", f"/v1/users/{env.user_id}/media")
    assert status == 200 and sorted(body["deleted_media"]) == sorted(ids)
    assert (await env.call("GET", f"/v1/users/{env.user_id}/media"))[1]["total"] == 0


async def test_delete_by_date_keeps_media_read_a_moment_ago(env: AdminEnv) -> None:
    """Reads are recorded behind (once a minute): an admin deleting what nobody read
    since a moment must not delete media read just now whose read is not written yet."""
    stale = await upload(env, b"stale file")
    read = await upload(env, b"read file")
    time.sleep(0.01)
    cutoff = int(time.time() * 1000)
    time.sleep(0.01)
    assert await download_status(env, read) == 200
    status, body = await env.call("POST", f"/v1/media/delete?before_ts={cutoff}")
    assert status == 200 and body == {"deleted_media": [stale], "total": 1}
    assert await download_status(env, read) == 200


async def test_purge_remote_cache(env: AdminEnv, tmp_path: Path) -> None:
    repository = env.client.server.app[MEDIA]
    path = repository.files.remote("remote.example", "abcdefghijkl")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"cached")
    now = int(time.time() * 1000)
    await repository.store.insert_remote(
        RemoteMedia(
            "remote.example",
            "rid",
            "abcdefghijkl",
            "text/plain",
            None,
            6,
            now - 10,
            now - 10,
            None,
            True,
        )
    )
    resp = await env.client.get(
        f"{V1}/download/remote.example/rid?allow_remote=false", headers=env.user
    )
    assert resp.status == 200 and await resp.read() == b"cached"
    status, body = await env.call("POST", f"/v1/purge_media_cache?before_ts={now - 1000}")
    assert body == {"deleted": 0}
    status, body = await env.call("POST", f"/v1/purge_media_cache?before_ts={now + 1000}")
    assert status == 200 and body == {"deleted": 1}
    assert not path.exists()
    resp = await env.client.get(
        f"{V1}/download/remote.example/rid?allow_remote=false", headers=auth(env.user_token)
    )
    assert resp.status == 404


async def test_media_info_of_unknown_media_is_404(env: AdminEnv) -> None:
    status, body = await env.call("GET", "/v1/media/test.local/nosuchmedia")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
