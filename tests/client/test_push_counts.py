"""Push actions for new events: unread counts (through the sync extension and /sync),
read receipts and own events clearing them, /notifications and /pushers."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.app import create_app
from homeserver.appstate import LOCAL_EVENTS, PUSH_ACTIONS, PUSH_STORE, STORES
from homeserver.config import Config
from homeserver.push.sync_extension import UnreadCountsExtension
from homeserver.storage.push import PushStore
from homeserver.storage.push_retention import DAY_MS, PushActionRetention
from homeserver.sync.extensions import SyncContext
from homeserver.sync.tokens import StreamToken
from tests.client.helpers import (
    auth,
    deployed,
    device_token,
    eventually,
    join_room,
    make_room,
    make_user,
)

SYNC = "/_matrix/client/v3/sync"


async def send(client: TestClient, room_id: str, sender: str, body: str, **extra: Any) -> str:
    content = {"msgtype": "m.text", "body": body, **extra}
    event = await client.server.app[LOCAL_EVENTS].send(room_id, sender, "m.room.message", content)
    return event.event_id


async def counts(client: TestClient, user_id: str, room_id: str) -> dict[str, int]:
    """unread_notifications exactly as the registered extension adds it to /sync (a
    deployment: as /sync, on whichever client reader serves the user, shows them)."""
    if deployed(client):
        return await _counts_over_http(client, user_id, room_id)
    app = client.server.app
    now = StreamToken(events=await app[STORES].events.get_current_stream_position())
    ctx = SyncContext(user_id, None, None, now, False, frozenset({room_id}))
    room: dict[str, Any] = {}
    await UnreadCountsExtension(app[PUSH_ACTIONS], app[PUSH_STORE]).per_room(
        ctx, room_id, room, "join"
    )
    return room["unread_notifications"]


async def _counts_over_http(client: TestClient, user_id: str, room_id: str) -> dict[str, int]:
    room_only = {
        "room": {"rooms": [room_id], "timeline": {"limit": 1}},
        "presence": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
    }
    response = await client.get(
        SYNC,
        params={"filter": json.dumps(room_only)},
        headers=auth(device_token(client, user_id, "DEVICE1")),
    )
    assert response.status == 200, await response.text()
    unread: dict[str, int] = (await response.json())["rooms"]["join"][room_id][
        "unread_notifications"
    ]
    return unread


async def expect_counts(client: TestClient, user_id: str, room_id: str, **want: int) -> None:
    """The user's unread counts in the room are `want` (the keys given). One process
    counts at once; a deployment's reader may hear of a send or receipt a moment
    later."""
    got = await eventually(
        client,
        lambda: counts(client, user_id, room_id),
        lambda c: all(c[k] == v for k, v in want.items()),
    )
    assert {k: got[k] for k in want} == want


async def two_users(client: TestClient, *, third: bool = True) -> tuple[str, str, str, str]:
    alice, _, _ = await make_user(client, "alice")
    bob, bob_token, _ = await make_user(client, "bob")
    room = await make_room(client, alice)
    await join_room(client, room, bob)
    if third:
        carol, _, _ = await make_user(client, "carol")
        await join_room(client, room, carol)
    return alice, bob, bob_token, room


async def test_messages_mentions_and_room_mentions(app_client: TestClient) -> None:
    alice, bob, _, room = await two_users(app_client)
    await expect_counts(app_client, bob, room, notification_count=0, highlight_count=0)
    await send(app_client, room, alice, "hello")
    await send(app_client, room, alice, "hey bob", **{"m.mentions": {"user_ids": [bob]}})
    # Alice created the room (power 100): her @room highlights.
    await send(app_client, room, alice, "everyone!", **{"m.mentions": {"room": True}})
    await send(app_client, room, alice, "quiet", msgtype="m.notice")
    await expect_counts(app_client, bob, room, notification_count=3, highlight_count=2)
    # The sender never gets notified about their own events.
    await expect_counts(app_client, alice, room, notification_count=0, highlight_count=0)


async def test_room_mention_without_permission(app_client: TestClient) -> None:
    alice, bob, _, room = await two_users(app_client)
    await send(app_client, room, bob, "@room look", **{"m.mentions": {"room": True}})
    await expect_counts(app_client, alice, room, notification_count=1, highlight_count=0)


async def test_a_room_mention_is_judged_by_the_power_levels_it_was_sent_under(
    app_client: TestClient,
) -> None:
    """Push rules read the sender's power level from the event's auth events (as
    Synapse does), not from the room's state when the actions are generated: Bob's
    @room, sent while he may notify the room, highlights for Alice even though his
    power is lowered before the generator reaches it (it read the room's current
    state, and gave no highlight)."""
    if deployed(app_client):
        pytest.skip("holds the push action generator of this process")
    alice, bob, _, room = await two_users(app_client)
    carol = alice.replace("alice", "carol")  # (two_users' third member)
    events = app_client.server.app[LOCAL_EVENTS]
    levels = {"users": {alice: 100, carol: 100, bob: 50}}
    await events.send(room, alice, "m.room.power_levels", levels, state_key="")
    generator = app_client.server.app[PUSH_ACTIONS]
    original, release = generator._generate_batch, asyncio.Event()

    async def held(batch: Any) -> Any:
        await release.wait()
        return await original(batch)

    generator._generate_batch = held
    await send(app_client, room, bob, "@room look", **{"m.mentions": {"room": True}})
    # Carol lowers him (an event of Alice's own would mark Bob's message read for her).
    lowered = {"users": {alice: 100, carol: 100, bob: 0}}
    await events.send(room, carol, "m.room.power_levels", lowered, state_key="")
    release.set()
    await expect_counts(app_client, alice, room, notification_count=1, highlight_count=1)


async def test_one_to_one_edits_and_reactions(app_client: TestClient) -> None:
    alice, bob, _, room = await two_users(app_client, third=False)
    original = await send(app_client, room, alice, "hi")
    events = app_client.server.app[LOCAL_EVENTS]
    await events.send(
        room,
        alice,
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": "* hi bob",
            "m.new_content": {"msgtype": "m.text", "body": "hi bob"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
            "m.mentions": {"user_ids": [bob]},
        },
    )
    await events.send(
        room,
        alice,
        "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": original, "key": "x"}},
    )
    # The edit names bob in m.mentions (an edit lists only whom it newly mentions), so
    # .m.rule.is_user_mention, ranked above .m.rule.suppress_edits, notifies him; the
    # reaction does not.
    await expect_counts(app_client, bob, room, notification_count=2, highlight_count=1)
    store = app_client.server.app[PUSH_STORE]
    rows = await store.get_notifications(bob, before=None, limit=10)
    sound = {"set_tweak": "sound", "value": "default"}
    assert [r.actions for r in rows] == [
        ["notify", sound, {"set_tweak": "highlight"}],
        ["notify", sound],
    ]
    assert rows[1].event_id == original
    # An edit that mentions nobody new is silent.
    await events.send(
        room,
        alice,
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": "* hi bob!",
            "m.new_content": {"msgtype": "m.text", "body": "hi bob!"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
            "m.mentions": {},
        },
    )
    await expect_counts(app_client, bob, room, notification_count=2, highlight_count=1)


async def test_receipts_and_own_events_clear_counts(app_client: TestClient) -> None:
    alice, bob, bob_token, room = await two_users(app_client)
    first = await send(app_client, room, alice, "one")
    await send(app_client, room, alice, "two")
    await expect_counts(app_client, bob, room, notification_count=2)
    app = app_client.server.app
    # A private read receipt, through its endpoint.
    r = await app_client.post(
        f"/_matrix/client/v3/rooms/{room}/receipt/m.read.private/{first}",
        json={},
        headers=auth(bob_token),
    )
    assert r.status == 200, await r.text()
    await expect_counts(app_client, bob, room, notification_count=1)
    # Sending an event moves the sender's read position past everything before it.
    await send(app_client, room, bob, "caught up")
    await expect_counts(app_client, bob, room, notification_count=0, highlight_count=0)
    await send(app_client, room, alice, "three")
    await expect_counts(app_client, bob, room, notification_count=1)
    # mark_read (for receipt writers) on the latest event clears it.
    latest = await send(app_client, room, alice, "four")
    if deployed(app_client):  # the service lives in the persister's memory: a receipt
        response = await app_client.post(
            f"/_matrix/client/v3/rooms/{room}/receipt/m.read/{latest}",
            json={},
            headers=auth(bob_token),
        )
        assert response.status == 200, await response.text()
    else:
        assert await app[PUSH_ACTIONS].mark_read(bob, room, latest)
    await expect_counts(app_client, bob, room, notification_count=0)


async def test_cached_counts_match_the_database_under_concurrency(app_client: TestClient) -> None:
    """Sends, receipts (public, private, threaded), the reader's own messages and count
    reads all race; afterwards the in-memory counts equal a fresh database count."""
    alice, bob, bob_token, room = await two_users(app_client)
    app = app_client.server.app
    sent: list[str] = []
    rng = random.Random(7)

    async def sender() -> None:
        for i in range(40):
            mention = {"m.mentions": {"user_ids": [bob]}} if i % 7 == 0 else {}
            sent.append(await send(app_client, room, alice, f"m{i}", **mention))
            if i % 9 == 0:
                await asyncio.sleep(0)

    async def reader() -> None:
        for i in range(30):
            await asyncio.sleep(rng.random() * 0.01)
            if sent and i % 3 == 0:
                kind = rng.choice(["m.read", "m.read.private"])
                target = rng.choice(sent)
                await app_client.post(
                    f"/_matrix/client/v3/rooms/{room}/receipt/{kind}/{target}",
                    json={},
                    headers=auth(bob_token),
                )
            elif i % 10 == 5:
                await send(app_client, room, bob, f"bob{i}")
            await counts(app_client, bob, room)

    await asyncio.gather(sender(), reader(), reader(), reader())
    if deployed(app_client):
        # The counts a reader serves (its cache, fed over replication) against a count
        # of the deployment's database by a store with nothing cached.
        # (Both read again until they agree: the last actions are recorded just after
        # their events.)
        async def served_and_counted() -> tuple[dict[str, int], dict[str, int]]:
            fresh = await PushStore(app[STORES].db).get_unread_counts(bob, room)
            counted = {
                "notification_count": sum(c.notifications for c in fresh.values()),
                "highlight_count": sum(c.highlights for c in fresh.values()),
            }
            return await counts(app_client, bob, room), counted

        served, counted = await eventually(app_client, served_and_counted, lambda r: r[0] == r[1])
        assert served == counted
        return
    await app[PUSH_ACTIONS].wait_until(await app[STORES].events.get_current_stream_position())
    cached = await counts(app_client, bob, room)
    fresh = await app[PUSH_STORE].get_unread_counts(bob, room)
    assert cached == {
        "notification_count": sum(c.notifications for c in fresh.values()),
        "highlight_count": sum(c.highlights for c in fresh.values()),
    }
    # And a cache entry rebuilt from scratch agrees too.
    app[PUSH_STORE].forget_room(room)
    assert await counts(app_client, bob, room) == cached


async def test_sync_carries_counts_in_the_same_response(app_client: TestClient) -> None:
    alice, bob, bob_token, room = await two_users(app_client)
    first = await app_client.get(SYNC, headers=auth(bob_token))
    body = await first.json()
    assert body["rooms"]["join"][room]["unread_notifications"] == {
        "notification_count": 0,
        "highlight_count": 0,
    }
    await send(app_client, room, alice, "ping", **{"m.mentions": {"user_ids": [bob]}})
    second = await app_client.get(
        SYNC, params={"since": body["next_batch"], "timeout": "0"}, headers=auth(bob_token)
    )
    joined = (await second.json())["rooms"]["join"][room]
    assert [e["content"]["body"] for e in joined["timeline"]["events"]] == ["ping"]
    assert joined["unread_notifications"] == {"notification_count": 1, "highlight_count": 1}


async def test_notifications_endpoint(app_client: TestClient) -> None:
    alice, bob, bob_token, room = await two_users(app_client)
    ids = [await send(app_client, room, alice, f"m{i}") for i in range(3)]
    hl = await send(app_client, room, alice, "yo", **{"m.mentions": {"user_ids": [bob]}})
    url = "/_matrix/client/v3/notifications"
    r = await app_client.get(url, params={"limit": "2"}, headers=auth(bob_token))
    assert r.status == 200
    page = await r.json()
    assert [n["event"]["event_id"] for n in page["notifications"]] == [hl, ids[2]]
    top = page["notifications"][0]
    assert top["room_id"] == room and top["read"] is False and isinstance(top["ts"], int)
    assert top["actions"][-1] == {"set_tweak": "highlight"}
    assert top["event"]["content"]["body"] == "yo"
    r = await app_client.get(
        url, params={"limit": "2", "from": page["next_token"]}, headers=auth(bob_token)
    )
    rest = await r.json()
    assert [n["event"]["event_id"] for n in rest["notifications"]] == [ids[1], ids[0]]
    r = await app_client.get(url, params={"only": "highlight"}, headers=auth(bob_token))
    only = await r.json()
    assert [n["event"]["event_id"] for n in only["notifications"]] == [hl]
    assert "next_token" not in only
    await send(app_client, room, bob, "read it all")
    r = await app_client.get(url, headers=auth(bob_token))
    assert all(n["read"] for n in (await r.json())["notifications"])
    r = await app_client.get(url, params={"from": "junk"}, headers=auth(bob_token))
    assert r.status == 400


async def test_pushers(app_client: TestClient) -> None:
    _, token, _ = await make_user(app_client, "dave")
    url = "/_matrix/client/v3/pushers"
    assert await (await app_client.get(url, headers=auth(token))).json() == {"pushers": []}
    pusher = {
        "kind": "http",
        "app_id": "com.example.app",
        "pushkey": "KEY1",
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "profile_tag": "tag",
        "lang": "en",
        "data": {"url": "https://push.example/_matrix/push/v1/notify", "format": "event_id_only"},
    }

    # Each listing waits for the change before it: in a deployment the main writes
    # pushers and a client reader lists them, a moment later.
    async def listing() -> Any:
        return await (await app_client.get(url, headers=auth(token))).json()

    r = await app_client.post(f"{url}/set", json=pusher, headers=auth(token))
    assert r.status == 200 and await r.json() == {}
    listed = await eventually(app_client, listing, lambda body: bool(body["pushers"]))
    # MSC3881: switched on unless said otherwise, and the session that set it up.
    expected = {
        **pusher,
        "org.matrix.msc3881.enabled": True,
        "org.matrix.msc3881.device_id": "DEVICE1",
    }
    assert listed == {"pushers": [expected]}
    # Update in place.
    r = await app_client.post(f"{url}/set", json={**pusher, "lang": "fr"}, headers=auth(token))
    changed = await eventually(
        app_client, listing, lambda body: [p["lang"] for p in body["pushers"]] != ["en"]
    )
    assert [p["lang"] for p in changed["pushers"]] == ["fr"]
    # Errors.
    for bad in (
        {**pusher, "kind": "email"},
        {**pusher, "data": {}},
        {**pusher, "data": {"url": "https://push.example/other"}},
        {**pusher, "kind": "carrier-pigeon"},
    ):
        r = await app_client.post(f"{url}/set", json=bad, headers=auth(token))
        assert r.status == 400, bad
    r = await app_client.post(f"{url}/set", json={**pusher, "lang": 5}, headers=auth(token))
    assert r.status == 400 and (await r.json())["errcode"] == "M_BAD_JSON"
    missing = {k: v for k, v in pusher.items() if k != "pushkey"}
    r = await app_client.post(f"{url}/set", json=missing, headers=auth(token))
    assert r.status == 400
    # kind null deletes.
    r = await app_client.post(
        f"{url}/set",
        json={"kind": None, "app_id": "com.example.app", "pushkey": "KEY1"},
        headers=auth(token),
    )
    assert r.status == 200
    assert await eventually(app_client, listing, lambda body: not body["pushers"]) == {
        "pushers": []
    }


async def test_legacy_mention_rules_as_a_client_sees_them(app_client: TestClient) -> None:
    """Messages from clients that do not send m.mentions still highlight for a display
    name, the localpart or @room (the spec's deprecated rules); a message that carries
    m.mentions is judged by it alone. Counts read from /sync, as a client reads them."""
    c = app_client
    alice, alice_token, _ = await make_user(c, "alice")
    bob, bob_token, _ = await make_user(c, "bob")
    room = await make_room(c, alice)
    await join_room(c, room, bob)
    carol, _, _ = await make_user(c, "carol")
    await join_room(c, room, carol)
    r = await c.put(
        f"/_matrix/client/v3/profile/{bob}/displayname",
        json={"displayname": "Bobby Tables"},
        headers=auth(bob_token),
    )
    assert r.status == 200

    async def read_counts() -> dict[str, int]:
        body = await (await c.get(SYNC, headers=auth(bob_token))).json()
        return dict(body["rooms"]["join"][room]["unread_notifications"])

    async def counts_are(expected: dict[str, int]) -> None:
        # A worker deployment: Bob's reader hears of Alice's message a moment after
        # her own reader acknowledged it.
        assert await eventually(c, read_counts, lambda now: now == expected) == expected

    async def say(body: str, **extra: Any) -> None:
        r = await c.put(
            f"/_matrix/client/v3/rooms/{room}/send/m.room.message/{len(body)}{body[:3]}",
            json={"msgtype": "m.text", "body": body, **extra},
            headers=auth(alice_token),
        )
        assert r.status == 200, await r.text()

    await say("is Bobby Tables here?")  # display name, no m.mentions
    await counts_are({"notification_count": 1, "highlight_count": 1})
    await say("bobby tables, again", **{"m.mentions": {}})  # says it mentions nobody
    await counts_are({"notification_count": 2, "highlight_count": 1})
    await say("ping bob")  # the localpart as a word (.m.rule.contains_user_name)
    await counts_are({"notification_count": 3, "highlight_count": 2})
    await say("@room lunch?")  # alice has the room notification power level
    await counts_are({"notification_count": 4, "highlight_count": 3})


async def test_a_malformed_rule_of_an_unknown_kind_spoils_nobody_elses_counts(
    app_client: TestClient,
) -> None:
    """A condition of a kind we do not know is kept as the client wrote it (the spec:
    it never matches), whatever its fields hold. One with a list where a string would
    be must not break the evaluation of the whole room's batch: before, its memo key
    held the list, the lookup raised, and nobody in the room was counted."""
    c = app_client
    alice, alice_token, _ = await make_user(c, "alice")
    bob, bob_token, _ = await make_user(c, "bob")
    mallory, mallory_token, _ = await make_user(c, "mallory")
    room = await make_room(c, alice)
    await join_room(c, room, bob)
    await join_room(c, room, mallory)
    r = await c.put(
        "/_matrix/client/v3/pushrules/global/override/odd",
        json={
            "conditions": [{"kind": "org.example.future", "pattern": ["a"], "is": {"b": 1}}],
            "actions": ["notify"],
        },
        headers=auth(mallory_token),
    )
    assert r.status == 200, await r.text()
    await send(c, room, alice, "hello both")
    expected = {"notification_count": 1, "highlight_count": 0}
    for user in (bob, mallory):
        got = await eventually(c, lambda u=user: counts(c, u, room), lambda now: now == expected)
        assert got == expected, user


async def test_counts_survive_the_retention_of_old_push_actions(
    database_settings: dict[str, Any], aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    """A day on, the rows of old notifications are deleted (storage/push_retention.py),
    but the unread counts /sync shows do not move, and real receipts still clear them."""
    app_client = await aiohttp_client(create_app(tmp_config(**database_settings)))
    alice, bob, bob_token, room = await two_users(app_client)
    carol = f"@carol:{bob.split(':', 1)[1]}"
    app = app_client.server.app
    db = app[STORES].db
    old = [await send(app_client, room, alice, f"m{i}") for i in range(3)]
    old.append(await send(app_client, room, alice, "bob?", **{"m.mentions": {"user_ids": [bob]}}))
    old.append(await send(app_client, room, alice, "m4"))
    r = await app_client.post(
        f"/_matrix/client/v3/rooms/{room}/receipt/m.read/{old[1]}", json={}, headers=auth(bob_token)
    )
    assert r.status == 200, await r.text()
    await expect_counts(app_client, bob, room, notification_count=3, highlight_count=1)
    await expect_counts(app_client, carol, room, notification_count=5, highlight_count=0)

    retention = PushActionRetention(db, pause_s=0)
    t0 = int(time.time() * 1000)
    await retention.run(t0)  # the position of "a day ago", for the next run
    new = await send(app_client, room, alice, "m5")
    await expect_counts(app_client, carol, room, notification_count=6)
    run = await retention.run(t0 + DAY_MS)
    # Bob's two read actions are simply gone; the rest is summed up.
    assert run.rows_folded == 2 * 5 - 1
    rows = await db.fetch(
        "SELECT user_id, event_id FROM event_push_actions WHERE room_id = $1 ORDER BY 1", room
    )
    assert [tuple(r) for r in rows] == [(bob, old[3]), (bob, new), (carol, new)]

    for user, want in ((bob, (4, 1)), (carol, (6, 0))):
        await expect_counts(
            app_client, user, room, notification_count=want[0], highlight_count=want[1]
        )
        fresh = await PushStore(db).get_unread_counts(user, room)
        assert (
            sum(c.notifications for c in fresh.values()),
            sum(c.highlights for c in fresh.values()),
        ) == want
    # GET /notifications lists what is left: the new message, and the mention (kept a
    # month).
    r = await app_client.get("/_matrix/client/v3/notifications", headers=auth(bob_token))
    assert [n["event"]["event_id"] for n in (await r.json())["notifications"]] == [new, old[3]]

    # A receipt for the newest folded event reads the summary; one for the newest
    # event reads everything.
    r = await app_client.post(
        f"/_matrix/client/v3/rooms/{room}/receipt/m.read/{old[4]}", json={}, headers=auth(bob_token)
    )
    assert r.status == 200, await r.text()
    await expect_counts(app_client, bob, room, notification_count=1, highlight_count=0)
    r = await app_client.post(
        f"/_matrix/client/v3/rooms/{room}/receipt/m.read/{new}", json={}, headers=auth(bob_token)
    )
    await expect_counts(app_client, bob, room, notification_count=0, highlight_count=0)
    assert (await retention.run(t0 + DAY_MS + 1)).summaries_swept == 1
    assert [tuple(r) for r in await db.fetch("SELECT user_id FROM push_summaries")] == [(carol,)]
