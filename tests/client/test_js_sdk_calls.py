"""matrix-js-sdk (a real client, from npm) on calls Element makes on unstable paths: a
room preview's summary (getRoomSummary, MSC3266) and the rooms shared with another user
(_unstable_getSharedRooms, MSC2666). Both failed before their paths were served: the
SDK asks there, not on the stable v1 paths. Skips without Node or the package, unless
JS_CLIENTS=1."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from tests.client.helpers import auth, register_user
from tests.client.test_sliding_sync_jssdk import live, run_js  # noqa: F401 (fixture)


async def test_room_summary_and_mutual_rooms_through_matrix_js_sdk(
    live: TestClient,  # noqa: F811
) -> None:
    alice = await register_user(live, "alice")
    bob = await register_user(live, "bob")
    rooms = []
    for name in ("Preview me", "Second"):
        resp = await live.post(
            "/_matrix/client/v3/createRoom",
            json={"preset": "public_chat", "name": name},
            headers=auth(bob["access_token"]),
        )
        rooms.append((await resp.json())["room_id"])
        await live.post(f"/_matrix/client/v3/join/{rooms[-1]}", headers=auth(alice["access_token"]))
    seen = await run_js(live, "client_calls.mjs", alice, rooms[0], bob["user_id"])
    assert seen["summary"]["room_id"] == rooms[0]
    assert seen["summary"]["name"] == "Preview me"
    assert seen["summary"]["join_rule"] == "public"
    assert sorted(seen["mutual"]) == sorted(rooms)
