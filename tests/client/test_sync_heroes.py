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


async def test_summaries_follow_every_membership_change(app_client) -> None:
    """Each incremental /sync that brings member events has the counts and heroes of
    that moment (the summary's members are cached per room: each change must reach
    them), and a room whose others all left takes its heroes from them."""
    alice, token, _ = await make_user(app_client, "alice")
    bob, btok, _ = await make_user(app_client, "bob")
    carol, ctok, _ = await make_user(app_client, "carol")
    resp = await app_client.post(
        f"{V3}/createRoom", json={"preset": "public_chat"}, headers=auth(token)
    )
    room = (await resp.json())["room_id"]

    async def summary(since: str | None) -> tuple[dict, str]:
        params = {"since": since} if since else {}
        body = await (await app_client.get(f"{V3}/sync", params=params, headers=auth(token))).json()
        section = body["rooms"]["join"].get(room, {})
        return section.get("summary", {}), body["next_batch"]

    first, since = await summary(None)
    assert first == {"m.joined_member_count": 1, "m.invited_member_count": 0, "m.heroes": []}
    await app_client.post(f"{V3}/join/{room}", headers=auth(btok))
    got, since = await summary(since)
    assert got == {"m.joined_member_count": 2, "m.invited_member_count": 0, "m.heroes": [bob]}
    invite = {"user_id": carol}
    await app_client.post(f"{V3}/rooms/{room}/invite", json=invite, headers=auth(token))
    got, since = await summary(since)
    assert got == {
        "m.joined_member_count": 2,
        "m.invited_member_count": 1,
        "m.heroes": [bob, carol],
    }
    await app_client.post(f"{V3}/rooms/{room}/leave", headers=auth(btok))
    got, since = await summary(since)
    assert got == {"m.joined_member_count": 1, "m.invited_member_count": 1, "m.heroes": [carol]}
    await app_client.post(f"{V3}/rooms/{room}/leave", headers=auth(ctok))  # rejects the invite
    got, since = await summary(since)
    # Nobody else joined or invited: the heroes are those who left.
    assert got == {
        "m.joined_member_count": 1,
        "m.invited_member_count": 0,
        "m.heroes": [bob, carol],
    }
    assert alice not in got["m.heroes"]
