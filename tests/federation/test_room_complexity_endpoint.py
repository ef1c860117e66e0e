"""GET /_matrix/federation/unstable/rooms/{roomId}/complexity, asked by a signed fake
peer (on SQLite and PostgreSQL: the answer is a SQL count).

As Synapse: `{"v1": state events / 500}` for a room that is public or world-readable,
404 M_INVALID_PARAM for any other room - and, here, for rooms we are not joined to
(whose state we may hold stale) and unknown rooms. The count is bounded."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.app import create_app
from homeserver.appstate import LOCAL_EVENTS, MEMBERSHIP, STORES
from homeserver.rooms import complexity
from tests import deployment_mode
from tests.federation.inbound_helpers import ALICE, create_room, fed, seed_remote_key

NOT_FOUND = (404, {"errcode": "M_INVALID_PARAM", "error": "Room not found"})


@pytest.fixture
async def client(aiohttp_client: Any, tmp_config: Any, database_settings: dict[str, Any]) -> Any:
    app_client = await aiohttp_client(create_app(tmp_config(**database_settings)))
    await seed_remote_key(app_client)
    return app_client


def _path(room_id: str) -> str:
    # Raw: the test client sends the path as given, which is what the peer signs.
    return f"/_matrix/federation/unstable/rooms/{room_id}/complexity"


async def _state_count(client: Any, room_id: str) -> int:
    return len(await client.app[STORES].current_state.get_current_state_ids(room_id))


async def _bloat(client: Any, room_id: str, count: int) -> None:
    for i in range(count):
        await client.app[LOCAL_EVENTS].send(room_id, ALICE, "org.example.filler", {}, str(i))


async def test_public_rooms_answer_state_events_over_500(client: Any) -> None:
    room_id = await create_room(client, preset="public_chat")
    await _bloat(client, room_id, 20)
    count = await _state_count(client, room_id)
    assert count >= 25  # the preset's state, alice and the twenty
    status, body = await fed(client, "GET", _path(room_id))
    assert (status, body) == (200, {"v1": round(count / 500, 2)})
    assert body["v1"] >= 0.05


@pytest.mark.skipif(
    bool(deployment_mode.MODE),
    reason="lowers the bound in this process; a deployment keeps its own",
)
async def test_the_count_is_bounded(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    room_id = await create_room(client, preset="public_chat")
    await _bloat(client, room_id, 10)
    monkeypatch.setattr(complexity, "MAX_COUNTED_STATE", 10)
    status, body = await fed(client, "GET", _path(room_id))
    assert (status, body) == (200, {"v1": 0.02})
    assert await _state_count(client, room_id) > 10


async def test_private_rooms_answer_only_when_world_readable(client: Any) -> None:
    room_id = await create_room(client, preset="private_chat")
    assert await fed(client, "GET", _path(room_id)) == NOT_FOUND
    await client.app[LOCAL_EVENTS].send(
        room_id,
        ALICE,
        "m.room.history_visibility",
        {"history_visibility": "world_readable"},
        "",
    )
    count = await _state_count(client, room_id)
    assert await fed(client, "GET", _path(room_id)) == (200, {"v1": round(count / 500, 2)})


async def test_rooms_we_are_not_in_are_not_found(client: Any) -> None:
    assert await fed(client, "GET", _path("!nowhere:test.local")) == NOT_FOUND
    room_id = await create_room(client, preset="public_chat")
    assert (await fed(client, "GET", _path(room_id)))[0] == 200
    await client.app[MEMBERSHIP].set_membership(room_id, ALICE, ALICE, "leave")
    # The state is still held, public; but no one of ours is in the room any more.
    assert await _state_count(client, room_id) > 0
    assert await fed(client, "GET", _path(room_id)) == NOT_FOUND


async def test_only_signed_requests_for_valid_room_ids(client: Any) -> None:
    room_id = await create_room(client, preset="public_chat")
    status, body = await fed(client, "GET", _path(room_id), sign=False)
    assert status == 401 and body["errcode"] == "M_UNAUTHORIZED", body
    status, body = await fed(client, "GET", _path("not-a-room"))
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM", body
