"""Deactivation with `erase: true` (issue 9): the erased user's messages are shown
redacted to users who join later and to servers that were not in the room when they
were sent (federation /event), while those who were there keep them (Synapse)."""

from __future__ import annotations

from homeserver.appstate import STORES
from tests.client.helpers import auth, register_user
from tests.client.test_accounts_account import _password_auth
from tests.federation.inbound_helpers import fed, seed_remote_key

V3 = "/_matrix/client/v3"


async def _bodies(client, room: str, token: str) -> list[dict]:
    resp = await client.get(
        f"{V3}/rooms/{room}/messages", params={"dir": "b", "limit": "50"}, headers=auth(token)
    )
    assert resp.status == 200
    return [e["content"] for e in (await resp.json())["chunk"] if e["type"] == "m.room.message"]


async def test_erased_users_messages_are_redacted_for_later_readers(app_client) -> None:
    client = app_client
    await seed_remote_key(client)
    erin = await register_user(client, "erin")
    carol = await register_user(client, "carol")
    resp = await client.post(
        f"{V3}/createRoom",
        json={
            "preset": "public_chat",
            "initial_state": [
                {
                    "type": "m.room.history_visibility",
                    "state_key": "",
                    "content": {"history_visibility": "world_readable"},
                }
            ],
        },
        headers=auth(carol["access_token"]),
    )
    room = (await resp.json())["room_id"]
    await client.post(f"{V3}/join/{room}", headers=auth(erin["access_token"]))
    sent = await client.put(
        f"{V3}/rooms/{room}/send/m.room.message/1",
        json={"msgtype": "m.text", "body": "my secret"},
        headers=auth(erin["access_token"]),
    )
    event_id = (await sent.json())["event_id"]

    ok = await client.post(
        f"{V3}/account/deactivate",
        json={"auth": _password_auth("erin"), "erase": True},
        headers=auth(erin["access_token"]),
    )
    assert ok.status == 200
    assert await client.app[STORES].accounts.erased_among(["@erin:test.local"]) == {
        "@erin:test.local"
    }

    # Carol was there: she keeps the message.
    assert {"msgtype": "m.text", "body": "my secret"} in await _bodies(
        client, room, carol["access_token"]
    )
    # Dave joins afterwards: he gets it redacted.
    dave = await register_user(client, "dave")
    await client.post(f"{V3}/join/{room}", headers=auth(dave["access_token"]))
    assert await _bodies(client, room, dave["access_token"]) == [{}]
    # A server with no user in the room then: redacted too.
    status, body = await fed(client, "GET", f"/_matrix/federation/v1/event/{event_id}")
    assert status == 200, body
    (pdu,) = body["pdus"]
    assert pdu["content"] == {}
