"""Deleting a room must never lower a stream's newest position.

Events, receipts and account data are numbered from the newest stored position + 1. A room deletion removes every row
of the room: when those rows held a stream's newest positions (the deletion's own kicks
are the newest events), the next write elsewhere would get a position that clients'
tokens have already passed, and their incremental syncs would never show it.
"""

from __future__ import annotations

from typing import Any

from homeserver.appstate import ADMIN_JOBS
from tests.admin.conftest import AdminEnv
from tests.client.helpers import auth, create_room, make_user, send_text

CLIENT = "/_matrix/client/v3"


async def sync(env: AdminEnv, token: str, since: str | None = None, timeout: int = 0) -> Any:
    query = f"?timeout={timeout}" + (f"&since={since}" if since else "")
    response = await env.client.get(f"{CLIENT}/sync{query}", headers=auth(token))
    assert response.status == 200, await response.text()
    return await response.json()


async def delete_room(env: AdminEnv, room_id: str) -> None:
    status, body = await env.call("DELETE", f"/v2/rooms/{room_id}", json={"purge": True})
    assert status == 200, body
    await env.client.server.app[ADMIN_JOBS].wait_idle()
    status, done = await env.call("GET", f"/v2/rooms/delete_status/{body['delete_id']}")
    assert done["status"] == "complete", done


async def test_messages_after_a_room_deletion_reach_incremental_syncs(
    database_settings: dict[str, Any], make_admin_env: Any
) -> None:
    env = await make_admin_env(**database_settings)
    carol_id, carol_token, _ = await make_user(env.client, "carol")
    kept = await create_room(env.client, carol_token)
    since = (await sync(env, carol_token))["next_batch"]

    # The doomed room's events (and its deletion's kicks) are the newest of the stream.
    doomed = await create_room(env.client, env.admin_token, preset="public_chat")
    for i in range(5):
        last = await send_text(env.client, env.admin_token, doomed, f"doomed {i}")
    # ... and the newest receipt and account data are of the doomed room too.
    await ok(env, "POST", f"/rooms/{doomed}/receipt/m.read/{last}", env.admin_token)
    await ok(env, "PUT", f"/user/{env.admin_id}/rooms/{doomed}/tags/u.x", env.admin_token)
    since = (await sync(env, carol_token, since))["next_batch"]
    await delete_room(env, doomed)
    since = (await sync(env, carol_token, since))["next_batch"]

    for i in range(3):
        last = await send_text(env.client, carol_token, kept, f"after {i}")
    await ok(env, "POST", f"/rooms/{kept}/receipt/m.read/{last}", carol_token)
    await ok(env, "PUT", f"/user/{carol_id}/rooms/{kept}/tags/u.home", carol_token)
    seen: list[str] = []
    receipts: list[str] = []
    tags: list[str] = []
    for _ in range(5):
        body = await sync(env, carol_token, since, timeout=500)
        since = body["next_batch"]
        room = body.get("rooms", {}).get("join", {}).get(kept, {})
        seen += [e["content"]["body"] for e in room.get("timeline", {}).get("events", [])]
        for event in room.get("ephemeral", {}).get("events", []):
            if event["type"] == "m.receipt":
                receipts += list(event["content"])
        for event in room.get("account_data", {}).get("events", []):
            if event["type"] == "m.tag":
                tags += list(event["content"]["tags"])
        if len(seen) >= 3 and receipts and tags:
            break
    assert seen == ["after 0", "after 1", "after 2"]
    assert receipts == [last] and tags == ["u.home"]


async def ok(env: AdminEnv, method: str, path: str, token: str) -> None:
    response = await env.client.request(method, CLIENT + path, headers=auth(token), json={})
    assert response.status == 200, await response.text()
