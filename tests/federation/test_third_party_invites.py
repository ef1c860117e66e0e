"""Third-party (email) invites through an identity server started by the test, across
two of our servers: invite an unbound address, bind it on the invitee's server, the
invite is exchanged with the inviter's server and the user joins; bound addresses,
revoked keys and forged signatures; binds, unbinds and deactivation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.federation.conftest import StartServer
from tests.federation.multiserver import LoopbackServer, eventually
from tests.identity_server import TOKEN, IdentityServer, other_key


@pytest.fixture
async def ids() -> AsyncIterator[IdentityServer]:
    server = IdentityServer()
    await server.start()
    yield server
    await server.close()


async def world(
    loopback: StartServer, ids: IdentityServer
) -> tuple[LoopbackServer, LoopbackServer]:
    a, b = await loopback("a"), await loopback("b")
    ids.homeservers = {s.name: f"http://{s.name}" for s in (a, b)}
    return a, b


def email_invite(ids: IdentityServer, address: str) -> dict[str, Any]:
    return {"id_server": ids.name, "id_access_token": TOKEN, "medium": "email", "address": address}


async def bind(server: LoopbackServer, user: str, ids: IdentityServer, address: str) -> None:
    sid = f"sid-{address}"
    ids.validated[sid] = ("email", address, "secret")
    body = {"id_server": ids.name, "id_access_token": TOKEN, "sid": sid, "client_secret": "secret"}
    await server.ok("POST", "/account/3pid/bind", user, body)


async def invite_state(server: LoopbackServer, user: str, room_id: str) -> dict | None:
    data = await server.sync(user)
    return data.get("rooms", {}).get("invite", {}).get(room_id)


async def test_unbound_email_invite_is_redeemed_across_servers(
    loopback: StartServer, ids: IdentityServer
) -> None:
    a, b = await world(loopback, ids)
    alice = await a.register("alice")
    room = await a.create_room(alice, preset="private_chat", name="Book club")
    await a.ok("POST", f"/rooms/{room}/invite", alice, email_invite(ids, "bob@example.org"))

    # The identity server stored the invite with what its email shows; the room has
    # the m.room.third_party_invite event with its token and keys.
    stored = ids.store_invite_bodies[-1]
    assert (stored["room_name"], stored["sender"], stored["room_join_rules"]) == (
        "Book club",
        alice,
        "invite",
    )
    token = ids.invite_for("bob@example.org").token
    status, tpi = await a.call(
        "GET", f"/rooms/{room}/state/m.room.third_party_invite/{token}", alice
    )
    assert status == 200
    assert tpi["display_name"] == "b...@example.org"
    assert tpi["public_keys"][0]["public_key"] == ids.public_key
    assert tpi["public_key"] == ids.public_key

    # Bob, on the other server, binds the address: the identity server calls b's
    # /3pid/onbind, b asks a to create the invite, a sends it to b.
    bob = await b.register("bob")
    await bind(b, bob, ids, "bob@example.org")
    assert ids.onbind_answers == [200]
    assert await eventually(lambda: invite_state(b, bob, room))
    await b.join(bob, room, [a.name])
    status, member = await a.call("GET", f"/rooms/{room}/state/m.room.member/{bob}", alice)
    assert member["membership"] == "join"
    status, invite = await a.call(
        "GET", f"/rooms/{room}/state/m.room.member/{bob}", alice, format="event"
    )
    # (the current member event is the join; the invite is in the timeline)
    data = await a.ok("GET", f"/rooms/{room}/messages", alice, dir="b", limit="10")
    invites = [
        e
        for e in data["chunk"]
        if e["type"] == "m.room.member" and e["content"]["membership"] == "invite"
    ]
    assert invites[0]["sender"] == alice
    third_party = invites[0]["content"]["third_party_invite"]
    assert third_party["display_name"] == "b...@example.org"
    assert third_party["signed"]["mxid"] == bob and third_party["signed"]["token"] == token


async def test_bound_address_gets_an_ordinary_invite(
    loopback: StartServer, ids: IdentityServer
) -> None:
    a, b = await world(loopback, ids)
    alice = await a.register("alice")
    carol = await b.register("carol")
    await bind(b, carol, ids, "carol@example.org")
    room = await a.create_room(alice, invite_3pid=[email_invite(ids, "carol@example.org")])
    assert await eventually(lambda: invite_state(b, carol, room))
    assert ids.invites == []  # nothing stored: the lookup found carol


async def test_revoked_key_and_forged_signatures_redeem_nothing(
    loopback: StartServer, ids: IdentityServer
) -> None:
    a, b = await world(loopback, ids)
    alice = await a.register("alice")
    room = await a.create_room(alice, preset="private_chat")
    for address in ("dan@example.org", "eve@example.org"):
        await a.ok("POST", f"/rooms/{room}/invite", alice, email_invite(ids, address))
    dan = await b.register("dan")
    eve = await b.register("eve")

    # A forged block (signed by a key the room never published) sent straight to
    # b's unauthenticated /3pid/onbind: nothing comes of it.
    forged = {
        "medium": "email",
        "address": "eve@example.org",
        "mxid": eve,
        "invites": [
            {
                "medium": "email",
                "address": "eve@example.org",
                "mxid": eve,
                "room_id": room,
                "sender": alice,
                "signed": ids.sign_invite(
                    eve, ids.invite_for("eve@example.org").token, other_key()
                ),
            }
        ],
    }
    async with b.http.put(f"http://{b.name}/_matrix/federation/v1/3pid/onbind", json=forged) as r:
        assert r.status == 200
    # The key is revoked at the identity server before dan binds.
    ids.revoked.add(ids.public_key)
    await bind(b, dan, ids, "dan@example.org")
    status, members = await a.call("GET", f"/rooms/{room}/members", alice)
    assert {e["state_key"] for e in members["chunk"]} == {alice}
    assert await invite_state(b, dan, room) is None
    assert await invite_state(b, eve, room) is None

    # And b cannot ask a to invite someone else than its own user.
    status, answer = await b.call(
        "POST",
        f"/join/{room}",
        dan,
        {"third_party_signed": ids.sign_invite(eve, "x", sender=alice)},
    )
    assert status == 403


async def test_join_with_third_party_signed_and_unbind_on_deactivation(
    loopback: StartServer, ids: IdentityServer
) -> None:
    a, b = await world(loopback, ids)
    alice = await a.register("alice")
    room = await a.create_room(alice, preset="private_chat")
    await a.ok("POST", f"/rooms/{room}/invite", alice, email_invite(ids, "fay@example.org"))
    fay = await b.register("fay")
    token = ids.invite_for("fay@example.org").token
    # The client redeems the signed block itself (the identity server's email link).
    signed = ids.sign_invite(fay, token, sender=alice)
    data = await b.ok(
        "POST", f"/join/{room}", fay, {"third_party_signed": signed}, server_name=a.name
    )
    assert data["room_id"] == room
    status, member = await a.call("GET", f"/rooms/{room}/state/m.room.member/{fay}", alice)
    assert member["membership"] == "join"

    # Binds are remembered: deactivation asks the identity server to forget them,
    # with b's X-Matrix signature (checked by the identity server).
    await bind(b, fay, ids, "fay@example.org")
    assert ids.bindings[("email", "fay@example.org")] == fay
    first = await b.call("POST", "/account/deactivate", fay, {})
    session = first[1]["session"]
    result = await b.ok(
        "POST",
        "/account/deactivate",
        fay,
        {
            "auth": {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "fay"},
                "password": "pw-fay",
                "session": session,
            }
        },
    )
    assert result == {"id_server_unbind_result": "success"}
    assert ids.unbinds == [
        (b.name, {"mxid": fay, "threepid": {"medium": "email", "address": "fay@example.org"}})
    ]
    assert ("email", "fay@example.org") not in ids.bindings


async def test_explicit_unbind_and_bad_identity_servers(
    loopback: StartServer, ids: IdentityServer
) -> None:
    a = await loopback("a")
    ids.homeservers = {a.name: f"http://{a.name}"}
    gus = await a.register("gus")
    await bind(a, gus, ids, "gus@example.org")
    body = {"medium": "email", "address": "gus@example.org"}
    assert await a.ok("POST", "/account/3pid/unbind", gus, body) == {
        "id_server_unbind_result": "success"
    }
    assert await a.ok("POST", "/account/3pid/unbind", gus, body) == {
        "id_server_unbind_result": "no-support"
    }
    room = await a.create_room(gus)
    for id_server in ("https://evil.example/path", "a b", "user@host"):
        status, err = await a.call(
            "POST",
            f"/rooms/{room}/invite",
            gus,
            {"id_server": id_server, "id_access_token": "t", "medium": "email", "address": "x@y"},
        )
        assert (status, err["errcode"]) == (400, "M_INVALID_PARAM"), id_server
    # An identity server that does not answer: a clean 502, not a hang or a 500.
    status, err = await a.call(
        "POST",
        f"/rooms/{room}/invite",
        gus,
        {"id_server": "127.0.0.1:1", "id_access_token": "t", "medium": "email", "address": "x@y"},
    )
    assert (status, err["errcode"]) == (502, "M_UNKNOWN")
