"""Third-party lookups, TURN, and content reports."""

from __future__ import annotations

from typing import Any

from homeserver.appstate import LOCAL_EVENTS, STORES
from homeserver.storage.reports import ReportStore
from tests.client.helpers import auth, make_room, make_user

C = "/_matrix/client/v3"


async def test_thirdparty_and_turn(app_client: Any) -> None:
    _, token, _ = await make_user(app_client, "alice")
    h = auth(token)
    assert await (await app_client.get(f"{C}/thirdparty/protocols", headers=h)).json() == {}
    for path in (
        "/thirdparty/location",
        "/thirdparty/user",
        "/thirdparty/location/irc",
        "/thirdparty/user/irc?nick=x",
    ):
        r = await app_client.get(C + path, headers=h)
        assert r.status == 200, path
        assert await r.json() == [], path
    r = await app_client.get(f"{C}/thirdparty/protocol/irc", headers=h)
    assert r.status == 404
    assert (await r.json())["errcode"] == "M_NOT_FOUND"
    r = await app_client.get(f"{C}/voip/turnServer", headers=h)
    assert r.status == 200
    assert await r.json() == {}
    for path in ("/thirdparty/protocols", "/voip/turnServer"):
        assert (await app_client.get(C + path)).status == 401


async def test_unbuilt_endpoints_are_unrecognized(app_client: Any) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    for method, path in (("GET", "/login/sso/redirect?redirectUrl=http://x"),):
        r = await app_client.request(method, C + path, json={}, headers=auth(token))
        assert r.status == 404, path
        assert (await r.json())["errcode"] == "M_UNRECOGNIZED", path


async def test_reports_are_stored(app_client: Any) -> None:
    alice, a_tok, _ = await make_user(app_client, "alice")
    bob, b_tok, _ = await make_user(app_client, "bob")
    room = await make_room(app_client, alice, preset="private_chat")
    event = await app_client.server.app[LOCAL_EVENTS].send(
        room, alice, "m.room.message", {"msgtype": "m.text", "body": "spam"}
    )
    eid = event.event_id
    r = await app_client.post(
        f"{C}/rooms/{room}/report/{eid}", json={"reason": "spam"}, headers=auth(a_tok)
    )
    assert r.status == 200, await r.text()
    assert await r.json() == {}
    # bob is not in the room: 404, nothing stored.
    r = await app_client.post(f"{C}/rooms/{room}/report/{eid}", json={}, headers=auth(b_tok))
    assert r.status == 404
    assert (await r.json())["errcode"] == "M_NOT_FOUND"
    r = await app_client.post(f"{C}/rooms/{room}/report/$missing", json={}, headers=auth(a_tok))
    assert r.status == 404
    # Room reports need no membership; the reason is required but may be blank.
    r = await app_client.post(f"{C}/rooms/{room}/report", json={"reason": ""}, headers=auth(b_tok))
    assert r.status == 200
    r = await app_client.post(f"{C}/rooms/{room}/report", json={}, headers=auth(b_tok))
    assert r.status == 400
    assert (await r.json())["errcode"] == "M_MISSING_PARAM"
    r = await app_client.post(
        f"{C}/rooms/!unknown:test.local/report", json={"reason": "x"}, headers=auth(b_tok)
    )
    assert r.status == 404
    r = await app_client.post(
        f"{C}/users/{alice}/report", json={"reason": "rude"}, headers=auth(b_tok)
    )
    assert r.status == 200
    r = await app_client.post(
        f"{C}/users/@ghost:test.local/report", json={"reason": "x"}, headers=auth(b_tok)
    )
    assert r.status == 404
    r = await app_client.post(f"{C}/users/{alice}/report", json={"reason": 5}, headers=auth(b_tok))
    assert r.status == 400
    assert (await r.json())["errcode"] == "M_BAD_JSON"
    reports = await ReportStore(app_client.server.app[STORES].db).recent_reports()
    assert [
        (x.kind, x.reporter, x.room_id, x.event_id, x.target_user_id, x.reason) for x in reports
    ] == [
        ("user", bob, None, None, alice, "rude"),
        ("room", bob, room, None, None, ""),
        ("event", alice, room, eid, None, "spam"),
    ]
