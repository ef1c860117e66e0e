"""room_prejoin_state (Synapse's): what an invitee sees of a room before joining, in
the invite of their /sync: the default types, more types with their state keys, or
only the listed ones (the create event always)."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.app import create_app
from homeserver.config import ConfigError
from tests.client.helpers import auth, register_user

C = "/_matrix/client/v3"


async def _invite_state(client: Any, **settings: Any) -> set[tuple[str, str]]:
    """The (type, state key) pairs bob's /sync shows of the room alice invites him to
    (a name, a topic and two custom state events in it)."""
    alice = (await register_user(client, "alice"))["access_token"]
    bob = await register_user(client, "bob")
    resp = await client.post(
        f"{C}/createRoom", json={"name": "Plans", "topic": "secret plans"}, headers=auth(alice)
    )
    room = (await resp.json())["room_id"]
    for key in ("a", "b"):
        await client.put(
            f"{C}/rooms/{room}/state/org.example.flag/{key}", json={"k": key}, headers=auth(alice)
        )
    await client.post(
        f"{C}/rooms/{room}/invite", json={"user_id": bob["user_id"]}, headers=auth(alice)
    )
    resp = await client.get(f"{C}/sync?timeout=0", headers=auth(bob["access_token"]))
    events = (await resp.json())["rooms"]["invite"][room]["invite_state"]["events"]
    return {(e["type"], e["state_key"]) for e in events if e["type"] != "m.room.member"}


async def test_the_default_shows_name_topic_and_create(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    client = await aiohttp_client(create_app(tmp_config()))
    shown = await _invite_state(client)
    assert {("m.room.create", ""), ("m.room.name", ""), ("m.room.topic", "")} <= shown
    assert not any(t == "org.example.flag" for t, _ in shown)


async def test_more_types_or_only_those(aiohttp_client: Any, tmp_config: Any) -> None:
    settings = {
        "disable_default_event_types": True,
        "additional_event_types": [["org.example.flag", "b"], "m.room.name"],
    }
    client = await aiohttp_client(create_app(tmp_config(room_prejoin_state=settings)))
    shown = await _invite_state(client)
    assert shown == {("m.room.create", ""), ("m.room.name", ""), ("org.example.flag", "b")}


async def test_a_type_alone_means_every_state_key(aiohttp_client: Any, tmp_config: Any) -> None:
    settings = {"additional_event_types": ["org.example.flag"]}
    client = await aiohttp_client(create_app(tmp_config(room_prejoin_state=settings)))
    shown = await _invite_state(client)
    assert {("org.example.flag", "a"), ("org.example.flag", "b"), ("m.room.topic", "")} <= shown


@pytest.mark.parametrize("bad", [[["only-type"]], [5], "m.room.name"])
def test_bad_types_are_refused(tmp_config: Any, bad: Any) -> None:
    with pytest.raises(ConfigError, match="room_prejoin_state"):
        tmp_config(room_prejoin_state={"additional_event_types": bad})
