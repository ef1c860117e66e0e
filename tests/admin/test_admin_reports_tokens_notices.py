"""Event and user reports, registration tokens and server notices through the admin
API, with the effects users see (a token lets someone register, a notice arrives)."""

from __future__ import annotations

from typing import Any

from tests.admin.conftest import AdminEnv
from tests.client.helpers import auth, eventually, join_room, make_user

CLIENT = "/_matrix/client/v3"


async def test_event_reports_list_details_delete(env: AdminEnv) -> None:
    client = env.client
    response = await client.post(
        f"{CLIENT}/createRoom",
        headers=env.admin,
        json={"preset": "public_chat", "name": "Reported", "room_alias_name": "rep"},
    )
    room_id = (await response.json())["room_id"]
    await join_room(client, room_id, env.user_id)
    carol_id, carol_token, _ = await make_user(client, "carol")
    await join_room(client, room_id, carol_id)
    events = []
    for i in range(3):
        response = await client.put(
            f"{CLIENT}/rooms/{room_id}/send/m.room.message/m{i}",
            headers=auth(carol_token),
            json={"msgtype": "m.text", "body": f"bad {i}"},
        )
        events.append((await response.json())["event_id"])
    for i, event_id in enumerate(events):
        response = await client.post(
            f"{CLIENT}/rooms/{room_id}/report/{event_id}",
            headers=env.user,
            json={"reason": f"reason {i}"},
        )
        assert response.status == 200
    await client.post(
        f"{CLIENT}/users/{carol_id}/report", headers=env.user, json={"reason": "rude"}
    )

    status, body = await env.call("GET", "/v1/event_reports?limit=2")
    assert status == 200 and body["total"] == 3 and body["next_token"] == 2
    newest = body["event_reports"][0]
    assert newest["event_id"] == events[2] and newest["reason"] == "reason 2"
    assert newest["user_id"] == env.user_id and newest["sender"] == carol_id
    assert newest["name"] == "Reported" and newest["canonical_alias"] == "#rep:test.local"
    assert newest["room_id"] == room_id and "score" in newest
    status, body = await env.call("GET", "/v1/event_reports?dir=f&from=2")
    assert [r["event_id"] for r in body["event_reports"]] == [events[2]]
    status, body = await env.call("GET", f"/v1/event_reports?event_sender_user_id={env.admin_id}")
    assert body["total"] == 0
    status, body = await env.call("GET", f"/v1/event_reports?user_id={env.user_id}")
    assert body["total"] == 3

    report_id = newest["id"]
    status, body = await env.call("GET", f"/v1/event_reports/{report_id}")
    assert body["event_json"]["content"]["body"] == "bad 2"
    assert body["event_json"]["sender"] == carol_id
    status, _ = await env.call("DELETE", f"/v1/event_reports/{report_id}")
    assert status == 200
    status, body = await env.call("GET", f"/v1/event_reports/{report_id}")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await env.call("DELETE", f"/v1/event_reports/{report_id}")
    assert status == 404

    status, body = await env.call("GET", "/v1/user_reports")
    assert body["total"] == 1
    (report,) = body["user_reports"]
    assert report["target_user_id"] == carol_id and report["reason"] == "rude"
    status, body = await env.call("GET", f"/v1/user_reports/{report['id']}")
    assert body["user_id"] == env.user_id
    status, _ = await env.call("DELETE", f"/v1/user_reports/{report['id']}")
    status, body = await env.call("GET", "/v1/user_reports")
    assert body["total"] == 0


async def register_with_token(env: AdminEnv, username: str, token: str) -> tuple[int, Any]:
    body: dict[str, Any] = {"username": username, "password": "pw pw pw"}
    response = await env.client.post(f"{CLIENT}/register", json=body)
    session = (await response.json())["session"]
    body["auth"] = {"type": "m.login.registration_token", "token": token, "session": session}
    response = await env.client.post(f"{CLIENT}/register", json=body)
    return response.status, await response.json()


async def test_registration_tokens(make_admin_env: Any) -> None:
    env = await make_admin_env(registration_requires_token=True)
    status, body = await env.call(
        "POST", "/v1/registration_tokens/new", json={"token": "once-only", "uses_allowed": 1}
    )
    assert status == 200
    assert body == {
        "token": "once-only",
        "uses_allowed": 1,
        "pending": 0,
        "completed": 0,
        "expiry_time": None,
    }
    status, generated = await env.call("POST", "/v1/registration_tokens/new", json={"length": 24})
    assert len(generated["token"]) == 24 and generated["uses_allowed"] is None
    status, body = await env.call(
        "POST", "/v1/registration_tokens/new", json={"token": "once-only"}
    )
    assert status == 400
    status, body = await env.call(
        "POST", "/v1/registration_tokens/new", json={"token": "bad token!"}
    )
    assert status == 400
    status, body = await env.call("POST", "/v1/registration_tokens/new", json={"uses_allowed": -1})
    assert status == 400

    status, reg = await register_with_token(env, "newbie", "once-only")
    assert status == 200, reg
    status, body = await env.call("GET", "/v1/registration_tokens/once-only")
    assert body["completed"] == 1
    status, reg = await register_with_token(env, "second", "once-only")
    assert status == 401  # used up

    status, valid = await env.call("GET", "/v1/registration_tokens?valid=true")
    assert [t["token"] for t in valid["registration_tokens"]] == [generated["token"]]
    status, invalid = await env.call("GET", "/v1/registration_tokens?valid=false")
    assert [t["token"] for t in invalid["registration_tokens"]] == ["once-only"]

    status, body = await env.call(
        "PUT", "/v1/registration_tokens/once-only", json={"uses_allowed": None, "expiry_time": 1}
    )
    assert body["uses_allowed"] is None and body["expiry_time"] == 1
    status, reg = await register_with_token(env, "third", "once-only")
    assert status == 401  # expired
    status, body = await env.call(
        "PUT", "/v1/registration_tokens/once-only", json={"expiry_time": None}
    )
    status, reg = await register_with_token(env, "third", "once-only")
    assert status == 200

    status, _ = await env.call("DELETE", "/v1/registration_tokens/once-only")
    status, body = await env.call("GET", "/v1/registration_tokens/once-only")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await env.call("DELETE", "/v1/registration_tokens/once-only")
    assert status == 404


async def test_server_notices(make_admin_env: Any) -> None:
    env = await make_admin_env(
        server_notices={
            "system_mxid_localpart": "notices",
            "system_mxid_display_name": "Server Notices",
            "room_name": "Notices",
            "auto_join": True,
        }
    )
    client = env.client
    status, body = await env.call(
        "POST",
        "/v1/send_server_notice",
        json={"user_id": env.user_id, "content": {"msgtype": "m.text", "body": "Maintenance at 5"}},
    )
    assert status == 200
    first = body["event_id"]

    async def initial_sync() -> dict[str, Any]:
        return await (await client.get(f"{CLIENT}/sync", headers=env.user)).json()

    def texts_of(sync: dict[str, Any]) -> list[Any]:
        rooms = sync["rooms"]["join"].values()
        return [e["content"].get("body") for r in rooms for e in r["timeline"]["events"]]

    # The user's sync may reach a client reader of a deployment before it has read the
    # notice the main just wrote (eventually: at once in one process).
    sync = await eventually(client, initial_sync, lambda s: "Maintenance at 5" in texts_of(s))
    (room_id,) = sync["rooms"]["join"]
    room = sync["rooms"]["join"][room_id]
    texts = texts_of(sync)
    assert "Maintenance at 5" in texts
    tags = {e["type"]: e["content"] for e in room["account_data"]["events"]}
    assert "m.server_notice" in tags["m.tag"]["tags"]
    members = {
        e["state_key"]: e["content"]
        for e in room["state"]["events"] + room["timeline"]["events"]
        if e["type"] == "m.room.member"
    }
    assert members["@notices:test.local"]["displayname"] == "Server Notices"
    # The user cannot answer in the notice room.
    response = await client.put(
        f"{CLIENT}/rooms/{room_id}/send/m.room.message/x",
        headers=env.user,
        json={"msgtype": "m.text", "body": "ok"},
    )
    assert response.status == 403

    # The same room is reused; a retried PUT with the same txn ID sends once.
    status, one = await env.call(
        "PUT",
        "/v1/send_server_notice/txn1",
        json={"user_id": env.user_id, "content": {"msgtype": "m.text", "body": "Second"}},
    )
    status, two = await env.call(
        "PUT",
        "/v1/send_server_notice/txn1",
        json={"user_id": env.user_id, "content": {"msgtype": "m.text", "body": "Second"}},
    )
    assert one["event_id"] == two["event_id"] != first
    status, rooms = await env.call("GET", f"/v1/users/{env.user_id}/joined_rooms")
    assert rooms["joined_rooms"] == [room_id]

    # Leaving does not stop notices: the user is brought back.
    await client.post(f"{CLIENT}/rooms/{room_id}/leave", headers=env.user, json={})
    status, _ = await env.call(
        "POST",
        "/v1/send_server_notice",
        json={"user_id": env.user_id, "content": {"msgtype": "m.text", "body": "Third"}},
    )
    assert status == 200
    status, rooms = await env.call("GET", f"/v1/users/{env.user_id}/joined_rooms")
    assert rooms["joined_rooms"] == [room_id]

    for body in (
        {"user_id": "@x:elsewhere.example", "content": {"body": "x"}},
        {"user_id": env.user_id},
        {"user_id": env.user_id, "content": "text"},
    ):
        status, answer = await env.call("POST", "/v1/send_server_notice", json=body)
        assert status == 400, (body, answer)
    status, answer = await env.call(
        "POST", "/v1/send_server_notice", json={"user_id": "@ghost:test.local", "content": {}}
    )
    assert status == 404


async def test_server_notices_off_without_config(env: AdminEnv) -> None:
    status, answer = await env.call(
        "POST", "/v1/send_server_notice", json={"user_id": env.user_id, "content": {"body": "x"}}
    )
    assert status == 400 and "not enabled" in answer["error"]
