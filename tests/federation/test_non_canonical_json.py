"""Non-canonical JSON in a membership handshake (issue 9): a float (or an integer
beyond 2^53) in a room version with strict canonical JSON is 400 M_BAD_JSON, as
Synapse answers, and nothing is stored."""

from __future__ import annotations

import pytest

from homeserver.appstate import STORES
from homeserver.events import get_room_version
from tests.federation.inbound_helpers import create_room, fed, seed_remote_key, sign_template


@pytest.mark.parametrize("bad", [1.5, 2**60])
async def test_send_join_with_non_canonical_json_is_400(app_client, bad) -> None:
    client = app_client
    await seed_remote_key(client)
    room = await create_room(client, version="10")
    status, made = await fed(
        client, "GET", f"/_matrix/federation/v1/make_join/{room}/@new:remote.test?ver=10"
    )
    assert status == 200
    template = dict(made["event"])
    template["content"] = dict(template["content"], x=bad)
    event = sign_template(template, get_room_version("10"))
    status, body = await fed(
        client, "PUT", f"/_matrix/federation/v2/send_join/{room}/{event.event_id}", event.pdu
    )
    assert (status, body["errcode"]) == (400, "M_BAD_JSON"), body
    stores = client.app[STORES]
    assert await stores.current_state.get_membership(room, "@new:remote.test") is None
