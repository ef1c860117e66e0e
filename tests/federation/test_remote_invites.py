"""Invites from another server (stored as outliers by invite v2) reach the invitee:
/sync shows the invite (out-of-band membership), and /join works without `via`
(through the inviter's server) - also in v12 rooms whose IDs name no server."""

from __future__ import annotations

from typing import Any

import pytest

from tests.federation.multiserver import eventually


@pytest.mark.parametrize("version", ["10", "12"])
async def test_remote_invite_shows_in_sync_and_join_needs_no_via(pair, version: str) -> None:
    a, b = pair
    alice = await a.register("alice")
    bob = await b.register("bob")
    room_id = await a.create_room(
        alice, preset="private_chat", room_version=version, name="Invite only"
    )
    first = await b.sync(bob)
    assert room_id not in first["rooms"]["invite"]
    await a.ok("POST", f"/rooms/{room_id}/invite", alice, {"user_id": bob})

    async def invited() -> dict | None:
        data = await b.ok("GET", "/sync", bob, since=first["next_batch"], timeout="0")
        return data["rooms"]["invite"].get(room_id)

    invite = await eventually(invited)
    events = invite["invite_state"]["events"]
    member = next(e for e in events if e["type"] == "m.room.member" and e["state_key"] == bob)
    assert member["sender"] == alice and member["content"]["membership"] == "invite"
    name = next(e for e in events if e["type"] == "m.room.name")
    assert name["content"] == {"name": "Invite only"}
    # The membership row: /joined_rooms does not list it yet, the invite is in sync.
    assert room_id not in (await b.ok("GET", "/joined_rooms", bob))["joined_rooms"]

    # No server_name/via: the server must use the inviter's.
    status, body = await b.call("POST", f"/join/{room_id}", bob, {})
    assert status == 200, body
    assert body == {"room_id": room_id}
    assert room_id in (await b.ok("GET", "/joined_rooms", bob))["joined_rooms"]
    members = await a.ok("GET", f"/rooms/{room_id}/joined_members", alice)
    assert set(members["joined"]) == {alice, bob}
    after = await b.sync(bob)
    assert room_id in after["rooms"]["join"] and room_id not in after["rooms"]["invite"]


async def test_remote_invite_carries_both_profiles(pair) -> None:
    """Invites over federation name both sides: the invite event carries the remote
    invitee's profile (asked of their server), and the stripped state we send carries
    the inviter's member event."""
    a, b = pair
    alice = await a.register("alice")
    bob = await b.register("bob")
    await a.ok("PUT", f"/profile/{alice}/displayname", alice, {"displayname": "Alice A."})
    await b.ok("PUT", f"/profile/{bob}/displayname", bob, {"displayname": "Bob B."})
    await b.ok("PUT", f"/profile/{bob}/avatar_url", bob, {"avatar_url": "mxc://b/bob"})
    room_id = await a.create_room(alice, preset="private_chat", name="Names")
    first = await b.sync(bob)
    await a.ok("POST", f"/rooms/{room_id}/invite", alice, {"user_id": bob})

    async def invited() -> dict | None:
        data = await b.ok("GET", "/sync", bob, since=first["next_batch"], timeout="0")
        return data["rooms"]["invite"].get(room_id)

    events = (await eventually(invited))["invite_state"]["events"]
    inviter = next(e for e in events if e["type"] == "m.room.member" and e["state_key"] == alice)
    assert inviter["content"]["displayname"] == "Alice A."
    invite = next(e for e in events if e["type"] == "m.room.member" and e["state_key"] == bob)
    assert invite["content"]["displayname"] == "Bob B."
    assert invite["content"]["avatar_url"] == "mxc://b/bob"
    state = await a.ok("GET", f"/rooms/{room_id}/state/m.room.member/{bob}", alice)
    assert state["displayname"] == "Bob B."


async def test_a_forged_invite_cannot_pin_the_room_version_of_a_later_join(pair) -> None:
    """A server outside the room invites bob into a room we do not know yet, claiming
    another room version. When bob joins the room through a resident server, the
    version its make_join names is the room's: the forged invite does not break what
    we store of the real room (same class as the forged-invite attacks, issue 8)."""
    import time as _time

    from signedjson.key import encode_verify_key_base64, get_verify_key

    from homeserver.appstate import STORES
    from homeserver.events import get_room_version
    from homeserver.events.builder import build_event
    from tests.federation.inbound_helpers import REMOTE, REMOTE_KEY, RITA, fed

    a, b = pair
    alice = await a.register("alice")
    bob = await b.register("bob")
    room_id = await a.create_room(alice, preset="public_chat", room_version="10", name="Real")
    await a.send_text(alice, room_id, "before bob")
    now = int(_time.time() * 1000)
    await b.app[STORES].server_keys.store_server_keys(
        REMOTE,
        [
            (
                f"{REMOTE_KEY.alg}:{REMOTE_KEY.version}",
                encode_verify_key_base64(get_verify_key(REMOTE_KEY)),
                now + 86_400_000,
                None,
            )
        ],
        now,
    )
    forged = build_event(
        get_room_version("1"),
        room_id=room_id,
        sender=RITA,
        type="m.room.member",
        content={"membership": "invite"},
        state_key=bob,
        prev_event_ids=[f"$x{'A' * 40}:{REMOTE}"],
        auth_event_ids=[f"$y{'B' * 40}:{REMOTE}"],
        depth=3,
        origin_server_ts=now,
        server_name=REMOTE,
        signing_key=REMOTE_KEY,
    )

    class Client:  # fed() speaks to b through its HTTP port
        def __init__(self) -> None:
            self.http = b.http

        async def request(self, method: str, path: str, data: Any = None, headers: Any = None):
            return await b.http.request(
                method, f"http://{b.name}{path}", data=data, headers=headers
            )

    status, body = await fed(
        Client(),  # type: ignore[arg-type]
        "PUT",
        f"/_matrix/federation/v2/invite/{room_id}/{forged.event_id}",
        {"room_version": "1", "event": forged.pdu, "invite_room_state": []},
        destination=b.name,
    )
    assert status == 200, body  # b is not in the room: it cannot tell the invite is forged
    await b.join(bob, room_id, [a.name])
    assert await b.app[STORES].rooms.get_room_version(room_id) == "10"
    await a.send_text(alice, room_id, "after bob")

    async def seen() -> list[str] | None:
        texts = await b.sync_texts(bob, room_id)
        return texts if "after bob" in texts else None

    assert "after bob" in await eventually(seen)
