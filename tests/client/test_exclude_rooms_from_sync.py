"""exclude_rooms_from_sync (Synapse's): rooms no sync shows, to anyone. A bot's busy
room configured so is in no /sync (initial or incremental, timeline or presence of
its members) and in no sliding sync list, while the user's other rooms are."""

from __future__ import annotations

from typing import Any

from homeserver.app import create_app
from tests.client.helpers import auth, register_user
from tests.client.helpers import send_text as _say

C = "/_matrix/client/v3"
SS = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"


async def _room(client: Any, token: str, name: str) -> str:
    resp = await client.post(f"{C}/createRoom", json={"name": name}, headers=auth(token))
    return (await resp.json())["room_id"]


async def test_excluded_rooms_are_in_no_sync(aiohttp_client: Any, tmp_config: Any) -> None:
    first = await aiohttp_client(create_app(tmp_config()))
    bot = await register_user(first, "bot")
    noisy = await _room(first, bot["access_token"], "Bot log")
    normal = await _room(first, bot["access_token"], "Humans")
    await first.close()

    # The same server, restarted with the bot's log room excluded.
    client = await aiohttp_client(create_app(tmp_config(exclude_rooms_from_sync=[noisy])))
    token = bot["access_token"]  # the same database: still signed in
    resp = await client.get(f"{C}/sync?timeout=0", headers=auth(token))
    initial = await resp.json()
    assert set(initial["rooms"]["join"]) == {normal}
    await _say(client, token, noisy, "log line")
    await _say(client, token, normal, "hello humans")
    resp = await client.get(
        f"{C}/sync?timeout=0&since={initial['next_batch']}", headers=auth(token)
    )
    later = await resp.json()
    assert set(later.get("rooms", {}).get("join", {})) == {normal}
    events = later["rooms"]["join"][normal]["timeline"]["events"]
    assert [e["content"]["body"] for e in events if e["type"] == "m.room.message"] == [
        "hello humans"
    ]

    body = {"lists": {"all": {"ranges": [[0, 10]], "timeline_limit": 1}}}
    resp = await client.post(SS, json=body, headers=auth(token))
    sliding = await resp.json()
    assert resp.status == 200, sliding
    assert sliding["lists"]["all"]["count"] == 1
    assert set(sliding["rooms"]) == {normal}
