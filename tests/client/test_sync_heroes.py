"""/sync room summaries (issue 9): `m.heroes` only for rooms without a name or
canonical alias, as Synapse; member counts always."""

from __future__ import annotations

from tests.client.helpers import auth, make_user

V3 = "/_matrix/client/v3"


async def test_heroes_only_for_unnamed_rooms(app_client) -> None:
    _, token, _ = await make_user(app_client, "alice")
    bob, btok, _ = await make_user(app_client, "bob")
    rooms = {}
    for label, body in (
        ("named", {"preset": "public_chat", "name": "Garden"}),
        ("aliased", {"preset": "public_chat", "room_alias_name": "garden"}),
        ("empty-name", {"preset": "public_chat", "name": ""}),
        ("plain", {"preset": "public_chat"}),
    ):
        resp = await app_client.post(f"{V3}/createRoom", json=body, headers=auth(token))
        rooms[label] = (await resp.json())["room_id"]
        await app_client.post(f"{V3}/join/{rooms[label]}", headers=auth(btok))
    sync = await (await app_client.get(f"{V3}/sync", headers=auth(token))).json()
    summaries = {label: sync["rooms"]["join"][rid]["summary"] for label, rid in rooms.items()}
    for label in ("named", "aliased"):
        assert "m.heroes" not in summaries[label], label
        assert summaries[label]["m.joined_member_count"] == 2
    for label in ("empty-name", "plain"):
        assert summaries[label]["m.heroes"] == [bob], label
