"""Profile endpoints: read, set, delete, custom fields, limits, and propagation into rooms."""

from __future__ import annotations

from typing import Any

from homeserver.app import create_app
from homeserver.appstate import MEMBERSHIP, PROFILES, STORES
from homeserver.composition import Overrides
from tests.client.helpers import auth, deployed, join_room, make_room, make_user

P = "/_matrix/client/v3/profile"


async def member_content(client: Any, room_id: str, user_id: str) -> dict[str, Any]:
    stores = client.server.app[STORES]
    event_id = await stores.current_state.get_current_state_event_id(
        room_id, "m.room.member", user_id
    )
    return dict((await stores.events.get_event(event_id)).content)


async def test_new_user_has_empty_profile_and_unknown_user_404(app_client: Any) -> None:
    alice, _, _ = await make_user(app_client, "alice")
    r = await app_client.get(f"{P}/{alice}")
    assert r.status == 200
    assert await r.json() == {}
    # Unset displayname/avatar_url of a user who exists: null, as Synapse answers.
    for key in ("displayname", "avatar_url"):
        r = await app_client.get(f"{P}/{alice}/{key}")
        assert (r.status, await r.json()) == (200, {key: None})
    r = await app_client.get(f"{P}/@nobody:test.local")
    assert r.status == 404
    assert (await r.json())["errcode"] == "M_NOT_FOUND"
    r = await app_client.get(f"{P}/@nobody:test.local/displayname")
    assert r.status == 404


async def test_set_and_get_displayname_and_avatar(app_client: Any) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    r = await app_client.put(
        f"{P}/{alice}/displayname", json={"displayname": "Alice W"}, headers=auth(token)
    )
    assert r.status == 200, await r.text()
    assert await r.json() == {}
    r = await app_client.put(
        f"{P}/{alice}/avatar_url", json={"avatar_url": "mxc://test.local/abc"}, headers=auth(token)
    )
    assert r.status == 200
    assert await (await app_client.get(f"{P}/{alice}/displayname")).json() == {
        "displayname": "Alice W"
    }
    assert await (
        await app_client.get(f"/_matrix/client/r0/profile/{alice}/avatar_url")
    ).json() == {"avatar_url": "mxc://test.local/abc"}
    assert await (await app_client.get(f"{P}/{alice}")).json() == {
        "displayname": "Alice W",
        "avatar_url": "mxc://test.local/abc",
    }
    # An empty string unsets, like Synapse.
    r = await app_client.put(
        f"{P}/{alice}/displayname", json={"displayname": ""}, headers=auth(token)
    )
    assert r.status == 200
    assert await (await app_client.get(f"{P}/{alice}")).json() == {
        "avatar_url": "mxc://test.local/abc"
    }


async def test_custom_fields_set_get_delete(app_client: Any) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    value = {"title": "Engineer", "since": 2020, "tags": ["a", "b"]}
    r = await app_client.put(
        f"{P}/{alice}/org.example.job", json={"org.example.job": value}, headers=auth(token)
    )
    assert r.status == 200, await r.text()
    r = await app_client.put(
        f"{P}/{alice}/m.tz", json={"m.tz": "Europe/Paris"}, headers=auth(token)
    )
    assert r.status == 200
    assert await (await app_client.get(f"{P}/{alice}/org.example.job")).json() == {
        "org.example.job": value
    }
    assert await (await app_client.get(f"{P}/{alice}")).json() == {
        "org.example.job": value,
        "m.tz": "Europe/Paris",
    }
    r = await app_client.delete(f"{P}/{alice}/org.example.job", headers=auth(token))
    assert r.status == 200
    assert await r.json() == {}
    assert (await app_client.get(f"{P}/{alice}/org.example.job")).status == 404
    # Deleting an absent field is fine.
    r = await app_client.delete(f"{P}/{alice}/org.example.job", headers=auth(token))
    assert r.status == 200
    assert await (await app_client.get(f"{P}/{alice}")).json() == {"m.tz": "Europe/Paris"}


async def test_bad_input(app_client: Any) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    h = auth(token)

    async def put(key: str, body: Any) -> tuple[int, str]:
        r = await app_client.put(f"{P}/{alice}/{key}", json=body, headers=h)
        return r.status, (await r.json()).get("errcode", "")

    assert await put("displayname", {"displayname": 5}) == (400, "M_BAD_JSON")
    assert await put("displayname", {"displayname": None}) == (400, "M_BAD_JSON")
    assert await put("displayname", {"displayname": True}) == (400, "M_BAD_JSON")
    assert await put("displayname", {"displayname": "x" * 257}) == (400, "M_INVALID_PARAM")
    assert await put("displayname", {"other": "x"}) == (400, "M_MISSING_PARAM")
    assert await put("displayname", []) == (400, "M_BAD_JSON")
    assert await put("avatar_url", {"avatar_url": "https://evil/x.png"}) == (400, "M_INVALID_PARAM")
    assert await put("avatar_url", {"avatar_url": ["mxc://a/b"]}) == (400, "M_BAD_JSON")
    assert await put("m.tz", {"m.tz": 1}) == (400, "M_BAD_JSON")
    assert await put("NotAKey", {"NotAKey": 1}) == (400, "M_INVALID_PARAM")
    assert await put("nodots", {"nodots": 1}) == (400, "M_INVALID_PARAM")
    long_key = "org." + "a" * 260
    assert await put(long_key, {long_key: 1}) == (400, "M_KEY_TOO_LARGE")
    assert await put("org.example.x", {"org.example.x": None}) == (400, "M_BAD_JSON")
    # The whole profile must stay under 64 KiB.
    assert await put("org.example.big", {"org.example.big": "x" * 40_000}) == (200, "")
    assert await put("org.example.big2", {"org.example.big2": "y" * 30_000}) == (
        400,
        "M_PROFILE_TOO_LARGE",
    )
    assert (await app_client.get(f"{P}/{alice}/org.example.big2")).status == 404
    r = await app_client.put(
        f"{P}/{alice}/displayname",
        data=b"{not json",
        headers={**h, "Content-Type": "application/json"},
    )
    assert r.status == 400
    assert (await r.json())["errcode"] == "M_NOT_JSON"
    r = await app_client.get(f"{P}/not-a-user-id")
    assert r.status == 400
    assert (await r.json())["errcode"] == "M_INVALID_PARAM"


async def test_auth_and_other_users(app_client: Any) -> None:
    alice, _, _ = await make_user(app_client, "alice")
    _, bob_token, _ = await make_user(app_client, "bob")
    r = await app_client.put(f"{P}/{alice}/displayname", json={"displayname": "x"})
    assert r.status == 401
    assert (await r.json())["errcode"] == "M_MISSING_TOKEN"
    r = await app_client.put(
        f"{P}/{alice}/displayname", json={"displayname": "Mallory"}, headers=auth(bob_token)
    )
    assert r.status == 403
    assert (await r.json())["errcode"] == "M_FORBIDDEN"
    r = await app_client.delete(f"{P}/{alice}/org.example.a", headers=auth(bob_token))
    assert r.status == 403
    assert await (await app_client.get(f"{P}/{alice}")).json() == {}


async def test_change_propagates_to_joined_rooms_only(app_client: Any) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    bob, _, _ = await make_user(app_client, "bob")
    joined = await make_room(app_client, alice)
    other = await make_room(app_client, bob)
    await join_room(app_client, other, alice)
    left_room = await make_room(app_client, bob)
    await join_room(app_client, left_room, alice)
    app = app_client.server.app
    await app[MEMBERSHIP].set_membership(left_room, alice, alice, "leave")

    r = await app_client.put(
        f"{P}/{alice}/displayname", json={"displayname": "Alice"}, headers=auth(token)
    )
    assert r.status == 200
    r = await app_client.put(
        f"{P}/{alice}/avatar_url", json={"avatar_url": "mxc://test.local/av"}, headers=auth(token)
    )
    assert r.status == 200
    for room_id in (joined, other):
        assert await member_content(app_client, room_id, alice) == {
            "membership": "join",
            "displayname": "Alice",
            "avatar_url": "mxc://test.local/av",
        }
    assert (await member_content(app_client, left_room, alice))["membership"] == "leave"
    # A custom field is not a member field: no new member event.
    stores = app[STORES]
    before = await stores.current_state.get_current_state_event_id(joined, "m.room.member", alice)
    r = await app_client.put(
        f"{P}/{alice}/org.example.x", json={"org.example.x": 1}, headers=auth(token)
    )
    assert r.status == 200
    after = await stores.current_state.get_current_state_event_id(joined, "m.room.member", alice)
    assert before == after
    # Deleting the avatar removes it from the member events.
    r = await app_client.delete(f"{P}/{alice}/avatar_url", headers=auth(token))
    assert r.status == 200
    assert await member_content(app_client, joined, alice) == {
        "membership": "join",
        "displayname": "Alice",
    }
    # Setting the same value again sends nothing.
    before = await stores.current_state.get_current_state_event_id(joined, "m.room.member", alice)
    r = await app_client.put(
        f"{P}/{alice}/displayname", json={"displayname": "Alice"}, headers=auth(token)
    )
    assert r.status == 200
    after = await stores.current_state.get_current_state_event_id(joined, "m.room.member", alice)
    assert before == after
    if not deployed(app_client):  # (the service is in the main's memory there)
        assert await app[PROFILES].propagate(alice) == 0


async def test_remote_profiles_404_without_federation(app_client: Any) -> None:
    r = await app_client.get(f"{P}/@carol:remote.example")
    assert r.status == 404
    assert (await r.json())["errcode"] == "M_NOT_FOUND"


async def test_remote_profiles_use_the_port(aiohttp_client: Any, tmp_config: Any) -> None:
    remote = "@carol:remote.example"

    class FakeRemote:
        def __init__(self) -> None:
            self.calls: list[tuple[str, str | None]] = []

        async def query_profile(self, user_id: str, field: str | None = None) -> Any:
            self.calls.append((user_id, field))
            if user_id != remote:
                return None
            profile = {"displayname": "Carol", "avatar_url": "mxc://remote.example/c"}
            return profile if field is None else {k: v for k, v in profile.items() if k == field}

    fake = FakeRemote()
    app_client = await aiohttp_client(
        create_app(tmp_config(), overrides=Overrides(remote_profiles=fake))
    )
    assert await (await app_client.get(f"{P}/{remote}")).json() == {
        "displayname": "Carol",
        "avatar_url": "mxc://remote.example/c",
    }
    assert await (await app_client.get(f"{P}/{remote}/displayname")).json() == {
        "displayname": "Carol"
    }
    assert (await app_client.get(f"{P}/{remote}/org.example.none")).status == 404
    assert (await app_client.get(f"{P}/@dave:remote.example")).status == 404
    assert fake.calls == [
        (remote, None),
        (remote, "displayname"),
        (remote, "org.example.none"),
        ("@dave:remote.example", None),
    ]
    # Remote users cannot be edited here.
    _, token, _ = await make_user(app_client, "alice")
    r = await app_client.put(
        f"{P}/{remote}/displayname", json={"displayname": "x"}, headers=auth(token)
    )
    assert r.status == 403
