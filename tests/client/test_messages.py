"""Rooms client API: send, redact, /event, /context, /messages, visibility, bad input."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import quote

import pytest

from homeserver.appstate import STORES
from homeserver.rooms.pagination import RoomToken
from homeserver.storage.txn_retention import TXN_RETENTION_MS, TransactionIdRetention
from homeserver.sync.tokens import StreamToken
from tests.client.helpers import auth, deployed, make_user

V3 = "/_matrix/client/v3"


@pytest.fixture
async def users(app_client: Any) -> dict[str, tuple[str, str]]:
    out = {}
    for name in ("alice", "bob", "carol"):
        user_id, token, _ = await make_user(app_client, name)
        out[name] = (user_id, token)
    return out


async def call(
    client: Any, method: str, path: str, token: str | None, body: Any = None, status: int = 200
) -> Any:
    kwargs: dict[str, Any] = {"headers": auth(token) if token else {}}
    if body is not None:
        kwargs["json"] = body
    resp = await client.request(method, f"{V3}{path}", **kwargs)
    data = await resp.json()
    assert resp.status == status, (resp.status, data)
    return data


async def create(client: Any, token: str, body: dict[str, Any] | None = None) -> str:
    return (await call(client, "POST", "/createRoom", token, body or {}))["room_id"]


async def send(client: Any, token: str, room: str, body: str, txn: str) -> str:
    data = await call(
        client,
        "PUT",
        f"/rooms/{room}/send/m.room.message/{txn}",
        token,
        {"msgtype": "m.text", "body": body},
    )
    return data["event_id"]


def bodies(chunk: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["body"] for e in chunk if e["type"] == "m.room.message"]


async def test_send_is_idempotent_per_device(app_client: Any, users: Any) -> None:
    alice, atok = users["alice"]
    room = await create(app_client, atok)
    first = await send(app_client, atok, room, "hello", "txn1")
    again = await send(app_client, atok, room, "hello", "txn1")
    assert first == again
    _, token2, _ = await make_user(app_client, "alice", device_id="DEVICE2")
    other = await send(app_client, token2, room, "hello", "txn1")
    assert other != first
    ev = await call(app_client, "GET", f"/rooms/{room}/event/{first}", atok)
    assert ev["content"] == {"msgtype": "m.text", "body": "hello"}
    assert ev["sender"] == alice and ev["room_id"] == room and ev["event_id"] == first
    assert ev["unsigned"]["transaction_id"] == "txn1"
    assert ev["unsigned"]["age"] >= 0
    seen_by_other_device = await call(app_client, "GET", f"/rooms/{room}/event/{first}", token2)
    assert "transaction_id" not in seen_by_other_device["unsigned"]
    page = await call(app_client, "GET", f"/rooms/{room}/messages?dir=b&limit=5", atok)
    assert bodies(page["chunk"]) == ["hello", "hello"]


async def test_send_requires_membership(app_client: Any, users: Any) -> None:
    _, atok = users["alice"]
    _, ctok = users["carol"]
    room = await create(app_client, atok, {"preset": "public_chat"})
    err = await call(
        app_client,
        "PUT",
        f"/rooms/{room}/send/m.room.message/t1",
        ctok,
        {"body": "x"},
        status=403,
    )
    assert err["errcode"] == "M_FORBIDDEN"


async def test_redaction_is_applied(app_client: Any, users: Any) -> None:
    _, atok = users["alice"]
    bob, btok = users["bob"]
    room = await create(app_client, atok, {"preset": "public_chat"})
    await call(app_client, "POST", f"/rooms/{room}/join", btok, {})
    alice_msg = await send(app_client, atok, room, "secret", "a1")
    bob_msg = await send(app_client, btok, room, "oops", "b1")
    err = await call(
        app_client, "PUT", f"/rooms/{room}/redact/{alice_msg}/r1", btok, {}, status=403
    )
    assert err["errcode"] == "M_FORBIDDEN"
    own = await call(
        app_client, "PUT", f"/rooms/{room}/redact/{bob_msg}/r2", btok, {"reason": "typo"}
    )
    again = await call(app_client, "PUT", f"/rooms/{room}/redact/{bob_msg}/r2", btok, {})
    assert own == again
    mod = await call(app_client, "PUT", f"/rooms/{room}/redact/{alice_msg}/r3", atok, {})
    ev = await call(app_client, "GET", f"/rooms/{room}/event/{bob_msg}", atok)
    assert ev["content"] == {}
    because = ev["unsigned"]["redacted_because"]
    assert because["event_id"] == own["event_id"]
    assert because["content"]["reason"] == "typo"
    assert because["content"]["redacts"] == bob_msg  # v12: redacts lives in content
    page = await call(app_client, "GET", f"/rooms/{room}/messages?dir=b&limit=10", atok)
    by_id = {e["event_id"]: e for e in page["chunk"]}
    assert by_id[alice_msg]["content"] == {}
    assert by_id[alice_msg]["unsigned"]["redacted_because"]["event_id"] == mod["event_id"]
    assert by_id[mod["event_id"]]["type"] == "m.room.redaction"
    err = await call(app_client, "PUT", f"/rooms/{room}/redact/$nope/r4", atok, {}, status=404)
    assert err["errcode"] == "M_NOT_FOUND"


async def test_redaction_in_old_room_version_has_top_level_redacts(
    app_client: Any, users: Any
) -> None:
    _, atok = users["alice"]
    room = await create(app_client, atok, {"room_version": "10"})
    msg = await send(app_client, atok, room, "x", "a1")
    red = await call(app_client, "PUT", f"/rooms/{room}/redact/{msg}/r1", atok, {})
    ev = await call(app_client, "GET", f"/rooms/{room}/event/{red['event_id']}", atok)
    assert ev["redacts"] == msg


async def test_pagination_backwards_and_forwards_without_gaps(app_client: Any, users: Any) -> None:
    _, atok = users["alice"]
    room = await create(app_client, atok)
    sent = [await send(app_client, atok, room, f"m{i}", f"t{i}") for i in range(25)]
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        query = "dir=b&limit=4" + (f"&from={token}" if token else "")
        page = await call(app_client, "GET", f"/rooms/{room}/messages?{query}", atok)
        seen.extend(e["event_id"] for e in page["chunk"])
        pages += 1
        if "end" not in page:
            break
        assert page["start"] == (token or page["start"])
        token = page["end"]
    assert pages > 6
    assert len(seen) == len(set(seen))  # no duplicates
    messages = [e for e in seen if e in sent]
    assert messages == list(reversed(sent))  # no gaps, newest first
    # The room's state events come last (oldest), the create event at the very end.
    first_event = await call(app_client, "GET", f"/rooms/{room}/event/{seen[-1]}", atok)
    assert first_event["type"] == "m.room.create"

    forward: list[str] = []
    token = None
    while True:
        query = "dir=f&limit=7" + (f"&from={token}" if token else "")
        page = await call(app_client, "GET", f"/rooms/{room}/messages?{query}", atok)
        forward.extend(e["event_id"] for e in page["chunk"])
        if not page["chunk"]:
            break
        token = page["end"]
    assert forward == list(reversed(seen))


async def test_messages_to_token_and_sync_style_tokens(app_client: Any, users: Any) -> None:
    _, atok = users["alice"]
    room = await create(app_client, atok)
    ids = [await send(app_client, atok, room, f"m{i}", f"t{i}") for i in range(6)]
    newest = await call(app_client, "GET", f"/rooms/{room}/messages?dir=b&limit=1", atok)
    assert [e["event_id"] for e in newest["chunk"]] == [ids[-1]]
    # `end` after 3 messages backwards; `to` stops a forward page there.
    page = await call(app_client, "GET", f"/rooms/{room}/messages?dir=b&limit=3", atok)
    assert [e["event_id"] for e in page["chunk"]] == ids[:2:-1]
    mid = page["end"]
    fwd = await call(app_client, "GET", f"/rooms/{room}/messages?dir=f&from={mid}&limit=10", atok)
    assert [e["event_id"] for e in fwd["chunk"]] == ids[3:]
    stream = RoomToken.parse(mid).stream
    sync_token = StreamToken(events=stream, typing=3).encode()
    back = await call(
        app_client, "GET", f"/rooms/{room}/messages?dir=b&from={sync_token}&limit=3", atok
    )
    assert [e["event_id"] for e in back["chunk"]] == [ids[2], ids[1], ids[0]]
    bounded = await call(
        app_client,
        "GET",
        f"/rooms/{room}/messages?dir=b&from={sync_token}&to={back['end']}&limit=50",
        atok,
    )
    assert [e["event_id"] for e in bounded["chunk"]] == [ids[2], ids[1], ids[0]]


async def test_messages_filter(app_client: Any, users: Any) -> None:
    alice, atok = users["alice"]
    bob, btok = users["bob"]
    room = await create(app_client, atok, {"preset": "public_chat"})
    await call(app_client, "POST", f"/rooms/{room}/join", btok, {})
    await send(app_client, atok, room, "from alice", "a")
    await send(app_client, btok, room, "from bob", "b")
    await call(
        app_client,
        "PUT",
        f"/rooms/{room}/send/m.room.message/c",
        atok,
        {"msgtype": "m.image", "body": "pic", "url": "mxc://test.local/x"},
    )
    await call(app_client, "PUT", f"/rooms/{room}/send/org.custom/d", atok, {"x": 1})

    async def page(flt: dict[str, Any]) -> dict[str, Any]:
        q = quote(json.dumps(flt))
        return await call(app_client, "GET", f"/rooms/{room}/messages?dir=b&filter={q}", atok)

    assert bodies((await page({"senders": [bob]}))["chunk"]) == ["from bob"]
    assert bodies((await page({"not_senders": [bob], "types": ["m.room.message"]}))["chunk"]) == [
        "pic",
        "from alice",
    ]
    assert bodies((await page({"contains_url": True}))["chunk"]) == ["pic"]
    types = {e["type"] for e in (await page({"types": ["org.*"]}))["chunk"]}
    assert types == {"org.custom"}
    assert "org.custom" not in {
        e["type"] for e in (await page({"not_types": ["org.custom"]}))["chunk"]
    }
    lazy = await page({"lazy_load_members": True, "types": ["m.room.message"], "limit": 2})
    assert len(lazy["chunk"]) == 2
    assert sorted(e["state_key"] for e in lazy["state"]) == [alice, bob]
    bad = await app_client.get(f"{V3}/rooms/{room}/messages?filter=%7Bnope", headers=auth(atok))
    assert bad.status == 400 and (await bad.json())["errcode"] == "M_NOT_JSON"
    bad = await app_client.get(
        f"{V3}/rooms/{room}/messages?filter={quote(json.dumps({'types': 'x'}))}",
        headers=auth(atok),
    )
    assert bad.status == 400 and (await bad.json())["errcode"] == "M_BAD_JSON"


async def test_context(app_client: Any, users: Any) -> None:
    alice, atok = users["alice"]
    room = await create(app_client, atok, {"name": "Ctx"})
    ids = [await send(app_client, atok, room, f"m{i}", f"t{i}") for i in range(7)]
    ctx = await call(app_client, "GET", f"/rooms/{room}/context/{ids[3]}?limit=4", atok)
    assert ctx["event"]["event_id"] == ids[3]
    assert [e["event_id"] for e in ctx["events_before"]] == [ids[2], ids[1]]
    assert [e["event_id"] for e in ctx["events_after"]] == [ids[4], ids[5]]
    state = {(e["type"], e["state_key"]) for e in ctx["state"]}
    assert ("m.room.name", "") in state and ("m.room.member", alice) in state
    # start/end continue exactly where the context stops.
    before = await call(
        app_client, "GET", f"/rooms/{room}/messages?dir=b&limit=1&from={ctx['start']}", atok
    )
    assert [e["event_id"] for e in before["chunk"]] == [ids[0]]
    after = await call(
        app_client, "GET", f"/rooms/{room}/messages?dir=f&limit=1&from={ctx['end']}", atok
    )
    assert [e["event_id"] for e in after["chunk"]] == [ids[6]]
    err = await call(app_client, "GET", f"/rooms/{room}/context/$missing", atok, status=404)
    assert err["errcode"] == "M_NOT_FOUND"


async def test_timestamp_to_event(app_client: Any, users: Any) -> None:
    _, atok = users["alice"]
    room = await create(app_client, atok)
    msg = await send(app_client, atok, room, "x", "t")
    ev = await call(app_client, "GET", f"/rooms/{room}/event/{msg}", atok)
    ts = ev["origin_server_ts"]
    resp = await app_client.get(
        f"/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={ts}&dir=b", headers=auth(atok)
    )
    body = await resp.json()
    assert resp.status == 200 and body == {"event_id": msg, "origin_server_ts": ts}
    resp = await app_client.get(
        f"/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={ts + 1}&dir=f",
        headers=auth(atok),
    )
    assert resp.status == 404 and (await resp.json())["errcode"] == "M_NOT_FOUND"
    resp = await app_client.get(
        f"/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts=abc&dir=f", headers=auth(atok)
    )
    assert resp.status == 400


async def _visibility_room(
    client: Any, users: Any, visibility: str
) -> tuple[str, list[str], list[str]]:
    """alice sends before bob is invited, after the invite, and after bob joins."""
    _, atok = users["alice"]
    bob, btok = users["bob"]
    room = await create(
        client,
        atok,
        {
            "preset": "private_chat",
            "initial_state": [
                {
                    "type": "m.room.history_visibility",
                    "content": {"history_visibility": visibility},
                }
            ],
        },
    )
    before = [await send(client, atok, room, "before", "b1")]
    await call(client, "POST", f"/rooms/{room}/invite", atok, {"user_id": bob})
    invited = [await send(client, atok, room, "invited", "i1")]
    await call(client, "POST", f"/rooms/{room}/join", btok, {})
    after = await send(client, atok, room, "after", "a1")
    return room, before + invited, [after]


@pytest.mark.parametrize(
    ("visibility", "expected"),
    [
        ("joined", ["after"]),
        ("invited", ["after", "invited"]),
        ("shared", ["after", "invited", "before"]),
        ("world_readable", ["after", "invited", "before"]),
    ],
)
async def test_history_visibility(
    app_client: Any, users: Any, visibility: str, expected: list[str]
) -> None:
    _, btok = users["bob"]
    room, earlier, _ = await _visibility_room(app_client, users, visibility)
    page = await call(app_client, "GET", f"/rooms/{room}/messages?dir=b&limit=50", btok)
    assert bodies(page["chunk"]) == expected
    status = 200 if visibility in ("shared", "world_readable") else 404
    await call(app_client, "GET", f"/rooms/{room}/event/{earlier[0]}", btok, status=status)


async def test_world_readable_peeking_and_leaving(app_client: Any, users: Any) -> None:
    _, atok = users["alice"]
    _, btok = users["bob"]
    _, ctok = users["carol"]
    room = await create(
        app_client,
        atok,
        {
            "preset": "public_chat",
            "initial_state": [
                {
                    "type": "m.room.history_visibility",
                    "content": {"history_visibility": "world_readable"},
                }
            ],
        },
    )
    await send(app_client, atok, room, "public", "p")
    peek = await call(app_client, "GET", f"/rooms/{room}/messages?dir=b", ctok)
    assert bodies(peek["chunk"]) == ["public"]
    state = await call(app_client, "GET", f"/rooms/{room}/state", ctok)
    assert any(e["type"] == "m.room.create" for e in state)
    # A user who left sees nothing sent after their leave (shared room).
    room2 = await create(app_client, atok, {"preset": "public_chat"})
    await call(app_client, "POST", f"/rooms/{room2}/join", btok, {})
    await send(app_client, atok, room2, "while in", "w")
    await call(app_client, "POST", f"/rooms/{room2}/leave", btok, {})
    late = await send(app_client, atok, room2, "after leave", "l")
    page = await call(app_client, "GET", f"/rooms/{room2}/messages?dir=b", btok)
    assert bodies(page["chunk"]) == ["while in"]
    await call(app_client, "GET", f"/rooms/{room2}/event/{late}", btok, status=404)
    fwd = await call(app_client, "GET", f"/rooms/{room2}/messages?dir=f&limit=50", btok)
    assert "after leave" not in bodies(fwd["chunk"])


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/rooms/../state", None),
        ("GET", "/rooms/%20/state", None),
        ("GET", "/rooms/!" + "a" * 300 + ":test.local/state", None),
        ("GET", "/rooms/{room}/event/notanid", None),
        ("GET", "/rooms/{room}/messages?dir=x", None),
        ("GET", "/rooms/{room}/messages?limit=-1", None),
        ("GET", "/rooms/{room}/messages?from=garbage", None),
        ("GET", "/rooms/{room}/members?membership=weird", None),
        ("PUT", "/rooms/{room}/send/m.room.message/t", [1, 2]),
        ("PUT", "/rooms/{room}/send/" + "x" * 300 + "/t", {}),
        ("POST", "/rooms/{room}/invite", {"user_id": 5}),
        ("POST", "/rooms/{room}/invite", {"user_id": "not-a-user"}),
        ("POST", "/rooms/{room}/kick", {}),
        ("POST", "/rooms/{room}/leave", {"reason": {"a": 1}}),
        ("POST", "/join/nothing", {}),
        ("POST", "/createRoom", {"visibility": True}),
        ("POST", "/createRoom", {"visibility": "secret"}),
        ("POST", "/createRoom", {"invite": "@bob:test.local"}),
        ("POST", "/createRoom", {"invite": ["bob"]}),
        ("POST", "/createRoom", {"name": 5}),
        ("POST", "/createRoom", {"room_version": "99"}),
        ("POST", "/createRoom", {"room_alias_name": "a:b"}),
        ("POST", "/createRoom", {"preset": "fancy"}),
        ("POST", "/createRoom", {"initial_state": [{"type": "x"}]}),
        ("POST", "/createRoom", {"initial_state": {"type": "x"}}),
        ("POST", "/createRoom", {"power_level_content_override": {"ban": "high"}}),
        ("POST", "/createRoom", {"creation_content": []}),
        ("POST", "/createRoom", {"is_direct": "yes"}),
        ("POST", "/rooms/{room}/upgrade", {"new_version": 12}),
        ("PUT", "/directory/room/%23x:test.local", {"room_id": "nope"}),
        ("POST", "/publicRooms", {"limit": "ten"}),
        ("POST", "/publicRooms", {"filter": {"generic_search_term": 3}}),
        ("GET", "/publicRooms?since=bogus", None),
    ],
)
async def test_bad_input_is_4xx(
    app_client: Any, users: Any, method: str, path: str, body: Any
) -> None:
    _, atok = users["alice"]
    room = await create(app_client, atok)
    resp = await app_client.request(
        method, V3 + path.replace("{room}", room), json=body, headers=auth(atok)
    )
    data = await resp.json()
    assert 400 <= resp.status < 500, (resp.status, data)
    assert data["errcode"].startswith("M_")


async def test_transaction_ids_are_forgotten_after_a_day(app_client: Any, users: Any) -> None:
    """storage/txn_retention.py: a day on, the send's transaction ID is gone from the
    database (and from the event as its sender sees it); a newer one stays."""
    _, atok = users["alice"]
    room = await create(app_client, atok)
    first = await send(app_client, atok, room, "hello", "txn-old")
    db = app_client.server.app[STORES].db
    await db.execute("UPDATE client_txns SET created_ts = created_ts - $1", TXN_RETENTION_MS)
    newer = await send(app_client, atok, room, "again", "txn-new")
    deleted = await TransactionIdRetention(db).run(int(time.time() * 1000))
    assert deleted["client_txns"] >= 1
    ev = await call(app_client, "GET", f"/rooms/{room}/event/{first}", atok)
    assert "transaction_id" not in ev["unsigned"]
    ev = await call(app_client, "GET", f"/rooms/{room}/event/{newer}", atok)
    assert ev["unsigned"]["transaction_id"] == "txn-new"
    assert await send(app_client, atok, room, "again", "txn-new") == newer


async def test_the_server_runs_the_retention_jobs(app_client: Any) -> None:
    """homeserver/retention.py is wired: a single-process server runs both jobs."""
    if deployed(app_client):
        pytest.skip("the deployment's main process runs them, not this one")
    names = {task.get_name() for task in asyncio.all_tasks()}
    assert {"push action retention", "transaction ID retention"} <= names
