"""What moderated users experience: shadow-banned, suspended and locked accounts, and
per-user rate-limit overrides, each set through the admin API and then tried by the
user themselves (and seen by a second user)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.admin.conftest import AdminEnv
from tests.client.helpers import auth, deployed, join_room, make_user

CLIENT = "/_matrix/client/v3"


async def create_public_room(env: AdminEnv) -> str:
    response = await env.client.post(
        f"{CLIENT}/createRoom", headers=env.admin, json={"preset": "public_chat"}
    )
    return (await response.json())["room_id"]


async def put(env: AdminEnv, path: str, token: str, body: dict[str, Any]) -> tuple[int, Any]:
    response = await env.client.put(CLIENT + path, headers=auth(token), json=body)
    return response.status, await response.json()


async def post(env: AdminEnv, path: str, token: str, body: dict[str, Any]) -> tuple[int, Any]:
    response = await env.client.post(CLIENT + path, headers=auth(token), json=body)
    return response.status, await response.json()


async def room_messages(env: AdminEnv, room_id: str) -> list[str]:
    response = await env.client.get(
        f"{CLIENT}/rooms/{room_id}/messages?dir=b&limit=50", headers=env.admin
    )
    body = await response.json()
    return [e["content"].get("body") for e in body["chunk"] if e["type"] == "m.room.message"]


async def test_shadow_banned_user_is_answered_but_unheard(env: AdminEnv) -> None:
    room_id = await create_public_room(env)
    await join_room(env.client, room_id, env.user_id)
    carol_id, carol_token, _ = await make_user(env.client, "carol")
    status, body = await env.call("POST", f"/v1/users/{env.user_id}/shadow_ban", json={})
    assert (status, body) == (200, {})
    status, user = await env.call("GET", f"/v2/users/{env.user_id}")
    assert user["shadow_banned"] is True

    status, body = await put(
        env,
        f"/rooms/{room_id}/send/m.room.message/s1",
        env.user_token,
        {"msgtype": "m.text", "body": "spam"},
    )
    assert status == 200 and body["event_id"].startswith("$")  # looks sent ...
    assert "spam" not in await room_messages(env, room_id)  # ... but nobody sees it
    status, body = await put(
        env, f"/rooms/{room_id}/state/m.room.topic", env.user_token, {"topic": "x"}
    )
    assert status == 200
    status, body = await post(
        env, f"/rooms/{room_id}/invite", env.user_token, {"user_id": carol_id}
    )
    assert (status, body) == (200, {})
    response = await env.client.get(f"{CLIENT}/sync", headers=auth(carol_token))
    assert room_id not in (await response.json()).get("rooms", {}).get("invite", {})
    status, _ = await put(
        env,
        f"/rooms/{room_id}/typing/{env.user_id}",
        env.user_token,
        {"typing": True, "timeout": 10000},
    )
    assert status == 200

    status, _ = await env.call("DELETE", f"/v1/users/{env.user_id}/shadow_ban")
    status, body = await put(
        env,
        f"/rooms/{room_id}/send/m.room.message/s2",
        env.user_token,
        {"msgtype": "m.text", "body": "heard again"},
    )
    assert "heard again" in await room_messages(env, room_id)


async def test_suspended_user_may_leave_and_redact_own_events_only(env: AdminEnv) -> None:
    room_id = await create_public_room(env)
    other = await create_public_room(env)
    await join_room(env.client, room_id, env.user_id)
    status, own = await put(
        env,
        f"/rooms/{room_id}/send/m.room.message/o1",
        env.user_token,
        {"msgtype": "m.text", "body": "mine"},
    )
    status, admins = await put(
        env,
        f"/rooms/{room_id}/send/m.room.message/a1",
        env.admin_token,
        {"msgtype": "m.text", "body": "admin's"},
    )
    status, body = await env.call("PUT", f"/v1/suspend/{env.user_id}", json={"suspend": True})
    assert (status, body) == (200, {f"user_{env.user_id}_suspended": True})
    await heard_everywhere(env)
    refused = [
        await put(
            env,
            f"/rooms/{room_id}/send/m.room.message/s1",
            env.user_token,
            {"msgtype": "m.text", "body": "no"},
        ),
        await post(env, f"/join/{other}", env.user_token, {}),
        await post(env, f"/rooms/{room_id}/invite", env.user_token, {"user_id": env.admin_id}),
        await put(env, f"/profile/{env.user_id}/displayname", env.user_token, {"displayname": "X"}),
        await put(env, f"/rooms/{room_id}/redact/{admins['event_id']}/r1", env.user_token, {}),
    ]
    for status, body in refused:
        assert (status, body["errcode"]) == (403, "M_USER_SUSPENDED"), body
    status, body = await put(
        env, f"/rooms/{room_id}/redact/{own['event_id']}/r2", env.user_token, {}
    )
    assert status == 200
    status, body = await post(env, f"/rooms/{room_id}/leave", env.user_token, {})
    assert status == 200
    status, user = await env.call("GET", f"/v2/users/{env.user_id}")
    assert user["suspended"] is True
    await env.call("PUT", f"/v1/suspend/{env.user_id}", json={"suspend": False})
    await heard_everywhere(env)
    status, _ = await post(env, f"/join/{other}", env.user_token, {})
    assert status == 200


async def test_locked_user_gets_m_user_locked_but_may_log_out(env: AdminEnv) -> None:
    client = env.client
    await env.call(
        "POST",
        f"/v1/reset_password/{env.user_id}",
        json={"new_password": "pw pw", "logout_devices": False},
    )
    status, _ = await env.call("PUT", f"/v2/users/{env.user_id}", json={"locked": True})
    assert status == 200
    response = await client.get(f"{CLIENT}/account/whoami", headers=env.user)
    body = await response.json()
    assert (response.status, body["errcode"], body["soft_logout"]) == (401, "M_USER_LOCKED", True)
    response = await client.post(
        f"{CLIENT}/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "bob"},
            "password": "pw pw",
        },
    )
    assert (response.status, (await response.json())["errcode"]) == (401, "M_USER_LOCKED")
    status, page = await env.call("GET", "/v2/users")
    assert env.user_id not in [u["name"] for u in page["users"]]  # Synapse: hidden by default
    status, page = await env.call("GET", "/v2/users?locked=true")
    assert env.user_id in [u["name"] for u in page["users"]]
    response = await client.post(f"{CLIENT}/logout", headers=env.user, json={})
    assert response.status == 200


async def heard_everywhere(env: AdminEnv) -> None:
    """In a deployment an admin's change (a rate limit override, a suspension) reaches
    the other processes (the room's event persister...) over Redis a moment after the
    admin API answered (homeserver/replication/ratelimits.py, moderation.py); requests
    in that moment are checked against the old one. One process: at once."""
    if deployed(env.client):
        await asyncio.sleep(0.5)


async def test_rate_limit_override(make_admin_env: Any) -> None:
    env = await make_admin_env(rc_enabled=True, rc_message={"per_second": 0.001, "burst_count": 2})
    room_id = await create_public_room(env)
    await join_room(env.client, room_id, env.user_id)

    async def burst(n: int, prefix: str) -> list[int]:
        out = []
        for i in range(n):
            status, _ = await put(
                env,
                f"/rooms/{room_id}/send/m.room.message/{prefix}{i}",
                env.user_token,
                {"msgtype": "m.text", "body": "x"},
            )
            out.append(status)
        return out

    assert await burst(3, "a") == [200, 200, 429]
    status, body = await env.call("GET", f"/v1/users/{env.user_id}/override_ratelimit")
    assert body == {}
    status, body = await env.call(
        "POST",
        f"/v1/users/{env.user_id}/override_ratelimit",
        json={"messages_per_second": 0, "burst_count": 0},
    )
    assert body == {"messages_per_second": 0, "burst_count": 0}
    await heard_everywhere(env)
    assert await burst(10, "b") == [200] * 10  # 0/0: never limited
    status, body = await env.call("GET", f"/v1/users/{env.user_id}/override_ratelimit")
    assert body == {"messages_per_second": 0, "burst_count": 0}
    status, body = await env.call(
        "POST",
        f"/v1/users/{env.user_id}/override_ratelimit",
        json={"messages_per_second": 1, "burst_count": 4},
    )
    await heard_everywhere(env)
    assert await burst(5, "c") == [200, 200, 200, 200, 429]
    status, _ = await env.call("DELETE", f"/v1/users/{env.user_id}/override_ratelimit")
    status, body = await env.call("GET", f"/v1/users/{env.user_id}/override_ratelimit")
    assert body == {}
    status, body = await env.call(
        "POST", f"/v1/users/{env.user_id}/override_ratelimit", json={"burst_count": -1}
    )
    assert status == 400


async def test_client_api_account_moderation_v1_18(env: AdminEnv) -> None:
    """The spec's own admin endpoints (/_matrix/client/v1/admin/suspend|lock) and the
    m.account_moderation capability, which only server admins get."""
    client = env.client
    path = f"/_matrix/client/v1/admin/suspend/{env.user_id}"
    response = await client.get(path, headers=env.admin)
    assert (response.status, await response.json()) == (200, {"suspended": False})
    response = await client.put(path, headers=env.admin, json={"suspended": True})
    assert (response.status, await response.json()) == (200, {"suspended": True})
    status, user = await env.call("GET", f"/v2/users/{env.user_id}")
    assert user["suspended"] is True
    response = await client.put(path, headers=env.admin, json={"suspended": "yes"})
    assert response.status == 400
    response = await client.get(path, headers=env.user)
    assert (response.status, (await response.json())["errcode"]) == (403, "M_FORBIDDEN")
    response = await client.get(
        "/_matrix/client/v1/admin/lock/@ghost:test.local", headers=env.admin
    )
    assert (response.status, (await response.json())["errcode"]) == (404, "M_NOT_FOUND")
    response = await client.get(
        "/_matrix/client/v1/admin/lock/@x:elsewhere.example", headers=env.admin
    )
    assert response.status == 400
    lock = f"/_matrix/client/v1/admin/lock/{env.user_id}"
    response = await client.put(lock, headers=env.admin, json={"locked": True})
    assert await response.json() == {"locked": True}
    response = await client.get(f"{CLIENT}/account/whoami", headers=env.user)
    assert (await response.json())["errcode"] == "M_USER_LOCKED"

    response = await client.get(f"{CLIENT}/capabilities", headers=env.admin)
    caps = (await response.json())["capabilities"]
    assert caps["m.account_moderation"] == {"suspend": True, "lock": True}
    _, carol_token, _ = await make_user(client, "carol")
    response = await client.get(f"{CLIENT}/capabilities", headers=auth(carol_token))
    assert "m.account_moderation" not in (await response.json())["capabilities"]
