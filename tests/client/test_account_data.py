"""Account data (global and per room) and tags, through their endpoints and /sync."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from tests.client.helpers import auth, make_room, make_user

V3 = "/_matrix/client/v3"


async def sync(client: TestClient, token: str, **params: str) -> dict[str, Any]:
    response = await client.get(f"{V3}/sync", params=params, headers=auth(token))
    assert response.status == 200
    return await response.json()


async def test_global_account_data_round_trip(app_client: TestClient) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    url = f"{V3}/user/{alice}/account_data/m.direct"
    missing = await app_client.get(url, headers=auth(token))
    assert missing.status == 404 and (await missing.json())["errcode"] == "M_NOT_FOUND"
    since = (await sync(app_client, token))["next_batch"]
    content = {"@bob:test.local": ["!dm:test.local"]}
    assert (await app_client.put(url, json=content, headers=auth(token))).status == 200
    assert await (await app_client.get(url, headers=auth(token))).json() == content

    body = await sync(app_client, token, since=since)
    assert body["account_data"]["events"] == [{"type": "m.direct", "content": content}]
    initial = await sync(app_client, token)
    assert {"type": "m.direct", "content": content} in initial["account_data"]["events"]
    again = await sync(app_client, token, since=body["next_batch"])
    assert again["account_data"]["events"] == []


async def test_room_account_data_and_tags(app_client: TestClient) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    room_id = await make_room(app_client, alice)
    since = (await sync(app_client, token))["next_batch"]
    base = f"{V3}/user/{alice}/rooms/{room_id}"
    assert (
        await app_client.put(f"{base}/account_data/org.example", json={"a": 1}, headers=auth(token))
    ).status == 200
    assert (
        await app_client.put(f"{base}/tags/m.favourite", json={"order": 0.5}, headers=auth(token))
    ).status == 200
    assert (await app_client.put(f"{base}/tags/u.work", json={}, headers=auth(token))).status == 200
    tags = await (await app_client.get(f"{base}/tags", headers=auth(token))).json()
    assert tags == {"tags": {"m.favourite": {"order": 0.5}, "u.work": {}}}
    assert (await app_client.delete(f"{base}/tags/u.work", headers=auth(token))).status == 200
    tags = await (await app_client.get(f"{base}/tags", headers=auth(token))).json()
    assert tags == {"tags": {"m.favourite": {"order": 0.5}}}

    body = await sync(app_client, token, since=since)
    room_data = body["rooms"]["join"][room_id]["account_data"]["events"]
    assert {"type": "org.example", "content": {"a": 1}} in room_data
    assert {"type": "m.tag", "content": {"tags": {"m.favourite": {"order": 0.5}}}} in room_data
    assert body["account_data"]["events"] == []


async def test_concurrent_tag_changes_all_land(app_client: TestClient) -> None:
    """Tags are one `m.tag` entry per room: each change reads and rewrites it, so
    changes at once (a user's devices tagging one room) must not drop each other."""
    alice, token, _ = await make_user(app_client, "alice")
    room_id = await make_room(app_client, alice)
    base = f"{V3}/user/{alice}/rooms/{room_id}/tags"
    for tag in ("u.gone1", "u.gone2"):
        assert (await app_client.put(f"{base}/{tag}", json={}, headers=auth(token))).status == 200

    async def put(i: int) -> int:
        body = {"order": i / 100}
        return (await app_client.put(f"{base}/u.t{i}", json=body, headers=auth(token))).status

    async def delete(tag: str) -> int:
        return (await app_client.delete(f"{base}/{tag}", headers=auth(token))).status

    statuses = await asyncio.gather(
        *(put(i) for i in range(20)), delete("u.gone1"), delete("u.gone2")
    )
    assert set(statuses) == {200}
    tags = await (await app_client.get(base, headers=auth(token))).json()
    assert tags == {"tags": {f"u.t{i}": {"order": i / 100} for i in range(20)}}
    initial = await sync(app_client, token)
    room_data = initial["rooms"]["join"][room_id]["account_data"]["events"]
    assert {"type": "m.tag", "content": tags} in room_data


async def test_account_data_errors(app_client: TestClient) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    bob, _, _ = await make_user(app_client, "bob")
    room_id = await make_room(app_client, alice)
    cases = [
        ("PUT", f"{V3}/user/{bob}/account_data/x", {}, 403, "M_FORBIDDEN"),
        ("GET", f"{V3}/user/{bob}/account_data/x", None, 403, "M_FORBIDDEN"),
        ("PUT", f"{V3}/user/{alice}/account_data/m.fully_read", {}, 405, "M_BAD_JSON"),
        ("PUT", f"{V3}/user/{alice}/account_data/m.push_rules", {}, 405, "M_BAD_JSON"),
        (
            "PUT",
            f"{V3}/user/{alice}/rooms/{room_id}/account_data/m.fully_read",
            {},
            405,
            "M_BAD_JSON",
        ),
        ("PUT", f"{V3}/user/{alice}/rooms/not-a-room/account_data/x", {}, 400, "M_INVALID_PARAM"),
        (
            "PUT",
            f"{V3}/user/{alice}/account_data/m.ignored_user_list",
            {"ignored_users": []},
            400,
            "M_BAD_JSON",
        ),
        ("PUT", f"{V3}/user/{alice}/rooms/{room_id}/tags/t", {"order": "first"}, 400, "M_BAD_JSON"),
    ]
    for method, url, body, status, errcode in cases:
        response = await app_client.request(method, url, json=body, headers=auth(token))
        assert response.status == status, url
        assert (await response.json())["errcode"] == errcode, url
    response = await app_client.put(
        f"{V3}/user/{alice}/account_data/x", data=b"[1]", headers=auth(token)
    )
    assert response.status == 400 and (await response.json())["errcode"] == "M_BAD_JSON"
