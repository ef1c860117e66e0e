"""The user admin API (Synapse's /_synapse/admin user endpoints) through HTTP, checking
what admin tools read back and what the affected users then experience."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from homeserver.appstate import STORES
from tests.admin.conftest import AdminEnv
from tests.client.helpers import (
    auth,
    deployed,
    eventually,
    join_room,
    make_room,
    make_user,
)

CLIENT = "/_matrix/client/v3"


async def login(client: TestClient, user: str, password: str) -> tuple[int, dict[str, Any]]:
    response = await client.post(
        f"{CLIENT}/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password,
        },
    )
    return response.status, await response.json()


async def whoami(client: TestClient, token: str) -> tuple[int, dict[str, Any]]:
    response = await client.get(f"{CLIENT}/account/whoami", headers=auth(token))
    return response.status, await response.json()


async def test_list_users_pages_filters_and_orders(env: AdminEnv) -> None:
    stores = env.client.server.app[STORES]
    for i in range(7):
        await stores.accounts.create_user(
            f"@user{i}:test.local", None, displayname=f"Person {6 - i}", created_ts=1000 + i
        )
    await stores.accounts.create_user("@guest1:test.local", None, is_guest=True, created_ts=5)
    await stores.accounts.create_user("@gone:test.local", None, created_ts=6)
    await stores.accounts.deactivate("@gone:test.local")

    status, body = await env.call("GET", "/v2/users?limit=3")
    assert status == 200
    names = [u["name"] for u in body["users"]]
    assert names == ["@admin:test.local", "@bob:test.local", "@guest1:test.local"]
    assert body["total"] == 10  # every user but the deactivated one
    assert body["next_token"] == "3"
    first = body["users"][0]
    assert first["admin"] is True and first["deactivated"] is False and first["is_guest"] is False
    assert set(first) >= {
        "name",
        "displayname",
        "avatar_url",
        "is_guest",
        "admin",
        "user_type",
        "deactivated",
        "erased",
        "shadow_banned",
        "locked",
        "creation_ts",
        "last_seen_ts",
    }
    # Walking next_token visits every user exactly once.
    seen: list[str] = []
    token: str | None = "0"
    while token is not None:
        status, page = await env.call("GET", f"/v2/users?limit=4&from={token}")
        seen += [u["name"] for u in page["users"]]
        token = page.get("next_token")
    assert len(seen) == len(set(seen)) == 10
    assert "@gone:test.local" not in seen

    status, body = await env.call("GET", "/v2/users?deactivated=true&limit=100")
    assert "@gone:test.local" in [u["name"] for u in body["users"]] and body["total"] == 11
    status, body = await env.call("GET", "/v3/users?deactivated=true")
    assert [u["name"] for u in body["users"]] == ["@gone:test.local"]
    status, body = await env.call("GET", "/v2/users?guests=false")
    assert "@guest1:test.local" not in [u["name"] for u in body["users"]]
    status, body = await env.call("GET", "/v2/users?admins=true")
    assert [u["name"] for u in body["users"]] == ["@admin:test.local"]

    # name matches localparts and display names, case-insensitively.
    status, body = await env.call("GET", "/v2/users?name=person%203")
    assert [u["name"] for u in body["users"]] == ["@user3:test.local"]
    status, body = await env.call("GET", "/v2/users?name=USER1")
    assert [u["name"] for u in body["users"]] == ["@user1:test.local"]
    status, body = await env.call("GET", "/v2/users?user_id=user4")
    assert [u["name"] for u in body["users"]] == ["@user4:test.local"]
    # LIKE wildcards in the term are taken literally.
    status, body = await env.call("GET", "/v2/users?name=%25")
    assert body["users"] == [] and body["total"] == 0

    status, body = await env.call("GET", "/v2/users?order_by=displayname&limit=3")
    assert [u["displayname"] for u in body["users"]] == ["Person 0", "Person 1", "Person 2"]
    status, body = await env.call("GET", "/v2/users?order_by=creation_ts&limit=3")
    assert [u["name"] for u in body["users"]] == [
        "@guest1:test.local",
        "@user0:test.local",
        "@user1:test.local",
    ]
    status, body = await env.call("GET", "/v2/users?order_by=creation_ts&dir=b&from=2&limit=2")
    assert [u["name"] for u in body["users"]] == ["@user6:test.local", "@user5:test.local"]


async def test_query_user_shape(env: AdminEnv) -> None:
    status, body = await env.call("GET", f"/v2/users/{env.user_id}")
    assert status == 200
    assert body["name"] == env.user_id
    assert body["threepids"] == [] and body["external_ids"] == []
    # Synapse's quirk, kept: the single-user view gives creation_ts in seconds.
    user = await env.client.server.app[STORES].accounts.get_user(env.user_id)
    assert user is not None and body["creation_ts"] == user.created_ts // 1000


async def test_put_creates_a_user_who_can_log_in(env: AdminEnv) -> None:
    status, body = await env.call(
        "PUT",
        "/v2/users/@carol:test.local",
        json={
            "password": "s3cret pass",
            "displayname": "Carol",
            "admin": False,
            "user_type": "bot",
            # What admin UIs send back from the record they read: ignored or accepted.
            "threepids": [],
            "external_ids": [],
            "avatar_src": None,
            "creation_ts_ms": 1,
        },
    )
    assert status == 201, body
    assert body["name"] == "@carol:test.local" and body["displayname"] == "Carol"
    assert body["user_type"] == "bot" and body["admin"] is False
    status, session = await login(env.client, "carol", "s3cret pass")
    assert status == 200 and session["user_id"] == "@carol:test.local"
    # Creating again is a modification (200), not a second account.
    status, body = await env.call("PUT", "/v2/users/@carol:test.local", json={"admin": True})
    assert status == 200 and body["admin"] is True


async def test_put_refuses_what_it_cannot_do(env: AdminEnv) -> None:
    for body in (
        {"threepids": [{"medium": "msisdn", "address": "447700900000"}]},
        {"external_ids": [{"auth_provider": "x", "external_id": "y"}]},
        {"avatar_url": "https://not-mxc.example/a.png"},
        {"user_type": "wizard"},
        {"admin": "yes"},
        {"password": 12},
    ):
        status, answer = await env.call("PUT", f"/v2/users/{env.user_id}", json=body)
        assert status == 400, (body, answer)
    status, answer = await env.call("PUT", "/v2/users/@Upper:test.local", json={})
    assert (status, answer["errcode"]) == (400, "M_INVALID_USERNAME")
    status, answer = await env.call("PUT", f"/v2/users/{env.admin_id}", json={"admin": False})
    assert status == 400 and "demote" in answer["error"]


async def test_put_modifies_profile_password_and_activation(env: AdminEnv) -> None:
    client = env.client
    room_id = await make_room(client, env.admin_id)
    await join_room(client, room_id, env.user_id)
    status, body = await env.call(
        "PUT",
        f"/v2/users/{env.user_id}",
        json={"displayname": "Robert", "avatar_url": "mxc://test.local/abc", "password": "new pw"},
    )
    assert status == 200 and body["displayname"] == "Robert"
    assert body["avatar_url"] == "mxc://test.local/abc"
    # The profile change reached the room (a new member event) ...
    response = await client.get(
        f"{CLIENT}/rooms/{room_id}/state/m.room.member/{env.user_id}", headers=env.admin
    )
    assert (await response.json())["displayname"] == "Robert"
    # ... and the new password logged out the old session (logout_devices defaults true).
    assert (await whoami(client, env.user_token))[0] == 401
    assert (await login(client, "bob", "new pw"))[0] == 200

    status, _ = await env.call("PUT", f"/v2/users/{env.user_id}", json={"deactivated": True})
    assert status == 200
    assert (await login(client, "bob", "new pw"))[0] == 403
    status, answer = await env.call("PUT", f"/v2/users/{env.user_id}", json={"deactivated": False})
    assert status == 400 and "password" in answer["error"]
    status, body = await env.call(
        "PUT", f"/v2/users/{env.user_id}", json={"deactivated": False, "password": "back again"}
    )
    assert status == 200 and body["deactivated"] is False
    assert (await login(client, "bob", "back again"))[0] == 200


async def test_deactivate_with_erase(env: AdminEnv) -> None:
    client = env.client
    room_id = await make_room(client, env.admin_id)
    await join_room(client, room_id, env.user_id)
    await env.call("PUT", f"/v2/users/{env.user_id}", json={"displayname": "Bobby"})
    status, body = await env.call("POST", f"/v1/deactivate/{env.user_id}", json={"erase": True})
    assert status == 200 and body == {"id_server_unbind_result": "success"}
    assert (await whoami(client, env.user_token))[0] == 401
    status, user = await env.call("GET", f"/v2/users/{env.user_id}")
    assert user["deactivated"] is True and user["erased"] is True and user["displayname"] is None
    status, rooms = await env.call("GET", f"/v1/users/{env.user_id}/joined_rooms")
    assert rooms == {"joined_rooms": [], "total": 0}
    status, members = await env.call("GET", f"/v1/rooms/{room_id}/members")
    assert env.user_id not in members["members"]
    # An empty body is accepted (Synapse's backwards compatibility).
    status, _ = await env.call("POST", f"/v1/deactivate/{env.admin_id}", data=b"")
    assert status == 200


async def test_reset_password(env: AdminEnv) -> None:
    client = env.client
    status, _ = await env.call(
        "POST",
        f"/v1/reset_password/{env.user_id}",
        json={"new_password": "reset pw", "logout_devices": False},
    )
    assert status == 200
    assert (await whoami(client, env.user_token))[0] == 200  # kept, as asked
    assert (await login(client, "bob", "reset pw"))[0] == 200
    status, _ = await env.call(
        "POST", f"/v1/reset_password/{env.user_id}", json={"new_password": "again"}
    )
    assert (await whoami(client, env.user_token))[0] == 401  # logged out by default
    status, answer = await env.call("POST", f"/v1/reset_password/{env.user_id}", json={})
    assert status == 400 and answer["errcode"] == "M_MISSING_PARAM"


async def test_admin_flag(env: AdminEnv) -> None:
    status, body = await env.call("GET", f"/v1/users/{env.user_id}/admin")
    assert (status, body) == (200, {"admin": False})
    status, _ = await env.call("PUT", f"/v1/users/{env.user_id}/admin", json={"admin": True})
    assert status == 200
    # Bob can now use the admin API himself.
    status, _ = await env.call("GET", "/v2/users", token="user")
    assert status == 200
    status, answer = await env.call("PUT", f"/v1/users/{env.admin_id}/admin", json={"admin": False})
    assert status == 400


async def test_devices(env: AdminEnv) -> None:
    client = env.client
    await make_user(client, "bob", "SECOND")
    status, body = await env.call("GET", f"/v2/users/{env.user_id}/devices")
    assert status == 200 and body["total"] == 2
    assert {d["device_id"] for d in body["devices"]} == {"BOBDEV", "SECOND"}
    device = next(d for d in body["devices"] if d["device_id"] == "BOBDEV")
    assert device["user_id"] == env.user_id and device["display_name"] == "bob's BOBDEV"
    # A request by bob shows up at once (last-seen times are written behind, and
    # flushed before the admin API reads them). In a deployment bob's request may reach
    # a client reader, which writes its own last-seen times behind: they reach the
    # main's admin API within that process's flush interval.
    assert (await whoami(client, env.user_token))[0] == 200

    async def bobdev() -> dict[str, Any]:
        return (await env.call("GET", f"/v2/users/{env.user_id}/devices/BOBDEV"))[1]

    body = await eventually(client, bobdev, lambda b: b["last_seen_ts"] is not None)
    assert body["last_seen_ts"] is not None and body["last_seen_ip"] == "127.0.0.1"
    await make_user(client, "silent")  # never made a request

    status, page = await env.call("GET", "/v2/users?order_by=last_seen_ts&limit=3")
    names = [u["name"] for u in page["users"]]
    if deployed(client):
        # Users made over HTTP were seen at /register, and bob's whoami a moment ago is
        # within the last-seen granularity: the order says nothing about "never seen".
        assert sorted(names) == sorted([env.user_id, env.admin_id, "@silent:test.local"])
    else:
        assert names == [env.user_id, env.admin_id, "@silent:test.local"]  # never seen: last
        assert page["users"][0]["last_seen_ts"] and page["users"][2]["last_seen_ts"] is None

    status, _ = await env.call(
        "PUT", f"/v2/users/{env.user_id}/devices/BOBDEV", json={"display_name": "Phone"}
    )
    status, body = await env.call("GET", f"/v2/users/{env.user_id}/devices/BOBDEV")
    assert body["display_name"] == "Phone"
    status, _ = await env.call("DELETE", f"/v2/users/{env.user_id}/devices/BOBDEV", json={})
    assert status == 200
    assert (await whoami(client, env.user_token))[0] == 401  # its token died with it
    status, answer = await env.call("GET", f"/v2/users/{env.user_id}/devices/BOBDEV")
    assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")
    status, _ = await env.call(
        "POST", f"/v2/users/{env.user_id}/devices", json={"device_id": "NEW"}
    )
    status, _ = await env.call(
        "POST", f"/v2/users/{env.user_id}/delete_devices", json={"devices": ["SECOND", "NEW"]}
    )
    status, body = await env.call("GET", f"/v2/users/{env.user_id}/devices")
    assert body == {"devices": [], "total": 0}


async def test_whois_rooms_memberships_pushers_account_data(env: AdminEnv) -> None:
    client = env.client
    room_id = await make_room(client, env.admin_id)
    other = await make_room(client, env.admin_id)
    await join_room(client, room_id, env.user_id)
    await join_room(client, other, env.user_id)
    await client.post(f"{CLIENT}/rooms/{other}/leave", headers=env.user, json={})
    await client.post(
        f"{CLIENT}/pushers/set",
        headers=env.user,
        json={
            "kind": "http",
            "app_id": "com.example.app",
            "pushkey": "key1",
            "app_display_name": "App",
            "device_display_name": "Phone",
            "lang": "en",
            "data": {"url": "https://push.example/_matrix/push/v1/notify"},
        },
    )
    await client.put(
        f"{CLIENT}/user/{env.user_id}/account_data/m.example", headers=env.user, json={"a": 1}
    )
    status, body = await env.call("GET", f"/v1/whois/{env.user_id}")
    assert body["user_id"] == env.user_id and "BOBDEV" in body["devices"]
    status, body = await env.call("GET", f"/v1/users/{env.user_id}/joined_rooms")
    assert body == {"joined_rooms": [room_id], "total": 1}
    status, body = await env.call("GET", f"/v1/users/{env.user_id}/memberships")
    assert body["memberships"] == {room_id: "join", other: "leave"}
    status, body = await env.call("GET", f"/v1/users/{env.user_id}/pushers")
    assert body["total"] == 1 and body["pushers"][0]["pushkey"] == "key1"
    assert body["pushers"][0]["data"]["url"].startswith("https://push.example")
    status, body = await env.call("GET", f"/v1/users/{env.user_id}/accountdata")
    assert body["account_data"]["global"]["m.example"] == {"a": 1}


async def test_login_as_user(env: AdminEnv) -> None:
    client = env.client
    status, body = await env.call("POST", f"/v1/users/{env.user_id}/login", json={})
    assert status == 200
    token = body["access_token"]
    assert (await whoami(client, token))[1]["user_id"] == env.user_id
    # No device was created for it: the user does not see a new session.
    status, devices = await env.call("GET", f"/v2/users/{env.user_id}/devices")
    assert [d["device_id"] for d in devices["devices"]] == ["BOBDEV"]
    status, body = await env.call(
        "POST", f"/v1/users/{env.user_id}/login", json={"valid_until_ms": 1}
    )
    assert (await whoami(client, body["access_token"]))[0] == 401  # already expired
    status, answer = await env.call("POST", f"/v1/users/{env.admin_id}/login", json={})
    assert status == 400


async def test_username_available(env: AdminEnv) -> None:
    status, body = await env.call("GET", "/v1/username_available?username=newbie")
    assert (status, body) == (200, {"available": True})
    status, body = await env.call("GET", "/v1/username_available?username=bob")
    assert (status, body["errcode"]) == (400, "M_USER_IN_USE")
    status, body = await env.call("GET", "/v1/username_available?username=Bad%20Name")
    assert (status, body["errcode"]) == (400, "M_INVALID_USERNAME")
