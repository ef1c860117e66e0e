"""Delayed events (MSC4140, homeserver/delayed): what a client sees through the API.

Element Call schedules its "left the call" state with a short delay and restarts the
timer while connected; the server sends it when the timer runs out. Checked here: the
event arrives as its owner's when due and not before, restarts postpone it, cancel
and send-now win exactly once against each other and the timer, the delay_id alone
manages it (no token) but another user's token cannot, someone else's state change
drops it, a send that fails is recorded with its error, schedules survive a restart and
a crash between sending and recording does not send twice (both backends).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from homeserver.app import create_app
from homeserver.appstate import DELAYED_EVENTS
from homeserver.config import Config
from homeserver.delayed import service as service_module
from homeserver.replication.forward import _shard_key
from tests import deployment_mode
from tests.client.helpers import auth, join_room, leave_room, make_room, make_user

V3 = "/_matrix/client/v3"
DE = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events"
DELAY = "org.matrix.msc4140.delay"
in_process_only = pytest.mark.skipif(
    bool(deployment_mode.MODE), reason="restarts or patches an in-process server"
)


async def _room_with_bob(client: Any) -> tuple[str, str, str, str, str]:
    alice, alice_token, _ = await make_user(client, "alice")
    bob, bob_token, _ = await make_user(client, "bob")
    room = await make_room(client, alice)
    await join_room(client, room, bob)
    return alice, alice_token, bob, bob_token, room


async def _schedule(
    client: Any, token: str, path: str, delay_ms: int, content: dict[str, Any]
) -> str:
    resp = await client.put(path, params={DELAY: str(delay_ms)}, json=content, headers=auth(token))
    body = await resp.json()
    assert resp.status == 200, body
    assert set(body) == {"delay_id"}
    return str(body["delay_id"])


async def _messages(client: Any, room: str, token: str, body: str) -> list[dict[str, Any]]:
    resp = await client.get(
        f"{V3}/rooms/{room}/messages", params={"dir": "b", "limit": "50"}, headers=auth(token)
    )
    assert resp.status == 200, await resp.text()
    return [e for e in (await resp.json())["chunk"] if e["content"].get("body") == body]


async def _state(client: Any, room: str, token: str, etype: str, key: str) -> Any:
    resp = await client.get(f"{V3}/rooms/{room}/state/{etype}/{key}", headers=auth(token))
    return await resp.json() if resp.status == 200 else None


async def _until(check: Callable[[], Any], timeout_s: float = 8.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


async def _listed(client: Any, token: str, **params: Any) -> dict[str, Any]:
    resp = await client.get(DE, params=params, headers=auth(token))
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def _act(client: Any, delay_id: str, action: str, token: str | None = None) -> Any:
    headers = auth(token) if token else {}
    return await client.post(f"{DE}/{delay_id}/{action}", json={}, headers=headers)


async def test_a_delayed_message_is_sent_as_its_owner_when_due(app_client: Any) -> None:
    client = app_client
    alice, alice_token, _, bob_token, room = await _room_with_bob(client)
    versions = await (await client.get("/_matrix/client/versions")).json()
    assert versions["unstable_features"]["org.matrix.msc4140"] is True
    path = f"{V3}/rooms/{room}/send/m.room.message/txn1"
    content = {"msgtype": "m.text", "body": "later"}
    started = time.monotonic()
    delay_id = await _schedule(client, alice_token, path, 2000, content)
    # The client retries its request: the same transaction answers the same delay_id.
    assert await _schedule(client, alice_token, path, 2000, content) == delay_id
    listed = await _listed(client, alice_token)
    (entry,) = listed["scheduled"]
    assert entry["delay_id"] == delay_id and entry["room_id"] == room
    assert entry["type"] == "m.room.message" and entry["content"] == content
    assert entry["delay"] == entry["delay_ms"] == 2000 and "state_key" not in entry
    assert abs(entry["running_since"] - time.time() * 1000) < 5000
    assert entry["delayed_since_ts"] == entry["running_since"]
    assert listed["delayed_events"] == listed["scheduled"] and listed["finalised"] == []
    assert await _listed(client, bob_token) == {
        "scheduled": [],
        "finalised": [],
        "delayed_events": [],
    }
    assert await _messages(client, room, bob_token, "later") == []

    sent = await _until(lambda: _messages(client, room, bob_token, "later"))
    assert time.monotonic() - started >= 1.95
    (event,) = sent
    assert event["sender"] == alice and event["content"] == content
    finalised = await _until(lambda: _listed(client, alice_token, status="finalised"), timeout_s=5)
    (done,) = finalised["finalised"]
    assert done["outcome"] == "send" and done["reason"] == "delay"
    assert done["event_id"] == event["event_id"] and done["delayed_event"]["delay_id"] == delay_id
    assert set(finalised) == {"finalised", "delayed_events"}
    scheduled = await _listed(client, alice_token, status="scheduled")
    assert scheduled == {"scheduled": [], "delayed_events": []}
    # Sent: nothing more can be done with it.
    for action in ("send", "cancel", "restart"):
        resp = await _act(client, delay_id, action)
        assert resp.status == 404 and (await resp.json())["errcode"] == "M_NOT_FOUND"
    await asyncio.sleep(0.3)
    assert len(await _messages(client, room, bob_token, "later")) == 1


async def test_restarting_postpones_a_state_event_and_cancel_stops_it(app_client: Any) -> None:
    client = app_client
    alice, alice_token, _, bob_token, room = await _room_with_bob(client)
    etype, key = "org.example.call.member", f"_{alice}_DEVICE1"
    path = f"{V3}/rooms/{room}/state/{etype}/{key}"
    delay_id = await _schedule(client, alice_token, path, 1500, {})
    (entry,) = (await _listed(client, alice_token))["scheduled"]
    assert entry["state_key"] == key and entry["content"] == {}
    # What Element Call does while connected: restart the timer, here without a token
    # (as an SFU's token service does for it), well inside the delay.
    started = time.monotonic()
    while time.monotonic() - started < 2.5:
        resp = await _act(client, delay_id, "restart")
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {}
        await asyncio.sleep(0.25)
    assert await _state(client, room, bob_token, etype, key) is None
    # The client "crashes": no more restarts, and the server sends the leave for it.
    assert await _until(lambda: _state(client, room, bob_token, etype, key)) == {}

    cancelled = await _schedule(
        client, alice_token, f"{V3}/rooms/{room}/send/m.room.message/t2", 1500, {"body": "never"}
    )
    resp = await client.post(
        f"{DE}/{cancelled}", json={"action": "cancel"}, headers=auth(alice_token)
    )
    assert resp.status == 200, await resp.text()
    await asyncio.sleep(1.8)  # past its time: the timer does not send it
    assert await _messages(client, room, bob_token, "never") == []
    finalised = (await _listed(client, alice_token))["finalised"]
    outcome = {f["delayed_event"]["delay_id"]: (f["outcome"], f["reason"]) for f in finalised}
    assert outcome[cancelled] == ("cancel", "action")
    assert outcome[delay_id] == ("send", "delay")
    resp = await _act(client, cancelled, "restart")
    assert resp.status == 404


async def test_send_now_and_cancel_race_and_exactly_one_wins(app_client: Any) -> None:
    client = app_client
    _, alice_token, _, bob_token, room = await _room_with_bob(client)
    path = f"{V3}/rooms/{room}/send/m.room.message/now"
    delay_id = await _schedule(client, alice_token, path, 60_000, {"body": "now"})
    resp = await _act(client, delay_id, "send", alice_token)
    assert resp.status == 200, await resp.text()
    assert len(await _messages(client, room, bob_token, "now")) == 1  # at once
    assert (await _act(client, delay_id, "send")).status == 404

    for round_ in range(8):
        body = f"raced {round_}"
        path = f"{V3}/rooms/{room}/send/m.room.message/race{round_}"
        delay_id = await _schedule(client, alice_token, path, 60_000, {"body": body})
        actions = ["send", "cancel", "restart"] * 2
        answers = await asyncio.gather(*(_act(client, delay_id, a) for a in actions))
        won = [a for a, r in zip(actions, answers, strict=True) if r.status == 200]
        assert all(r.status in (200, 404) for r in answers)
        # At most one send or cancel acts; a restart may act before either, never after.
        final = [a for a in won if a != "restart"]
        assert len(final) <= 1, won
        if not final:  # only restarts acted: it is still scheduled; settle it now
            assert (await _act(client, delay_id, "cancel")).status == 200
        expected = 1 if final == ["send"] else 0
        assert len(await _messages(client, room, bob_token, body)) == expected
        again = [(await _act(client, delay_id, a)).status for a in ("send", "cancel")]
        assert again == [404, 404]


async def test_the_delay_id_manages_it_and_bad_requests_are_refused(app_client: Any) -> None:
    client = app_client
    _, alice_token, _, bob_token, room = await _room_with_bob(client)
    path = f"{V3}/rooms/{room}/send/m.room.message/mine"
    delay_id = await _schedule(client, alice_token, path, 60_000, {"body": "mine"})
    assert delay_id.startswith("dly_") and len(delay_id) >= 32
    # A token given must be valid; whose it is does not matter (Synapse 1.163 acts for
    # Bob's token on Alice's event too): the unguessable delay_id is what authorises.
    resp = await client.post(f"{DE}/{delay_id}", json={"action": "send"}, headers=auth("bogus"))
    assert resp.status == 401 and (await resp.json())["errcode"] == "M_UNKNOWN_TOKEN"
    assert await _messages(client, room, bob_token, "mine") == []
    resp = await client.post(
        f"{DE}/{delay_id}", json={"action": "restart"}, headers=auth(bob_token)
    )
    assert resp.status == 200
    # Bob's list shows only his own.
    assert (await _listed(client, bob_token))["delayed_events"] == []
    # One of them, as Synapse 1.163 answers it: the owner's only, the latest field names.
    one = await client.get(f"{DE}/{delay_id}", headers=auth(alice_token))
    assert one.status == 200
    body = await one.json()
    assert set(body) == {"delay_id", "room_id", "type", "delay_ms", "delayed_since_ts", "content"}
    assert body["delay_id"] == delay_id and body["content"] == {"body": "mine"}
    other = await client.get(f"{DE}/{delay_id}", headers=auth(bob_token))
    assert other.status == 404 and (await other.json())["errcode"] == "M_NOT_FOUND"
    assert (await client.get(f"{DE}/{delay_id}")).status == 401
    resp = await _act(client, "dly_" + "A" * 32, "cancel")
    assert resp.status == 404 and (await resp.json())["errcode"] == "M_NOT_FOUND"
    bad = await client.post(f"{DE}/{delay_id}", json={"action": "explode"})
    assert bad.status == 400 and (await bad.json())["errcode"] == "M_INVALID_PARAM"
    missing = await client.post(f"{DE}/{delay_id}", json={})
    assert missing.status == 400 and (await missing.json())["errcode"] == "M_MISSING_PARAM"
    unknown_path = await client.post(f"{DE}/{delay_id}/explode", json={})
    assert unknown_path.status in (404, 405)
    assert (await client.get(DE)).status == 401
    bad_status = await client.get(DE, params={"status": "x"}, headers=auth(alice_token))
    assert bad_status.status == 400
    # The request's own checks: the delay is a number, within the maximum.
    for value in ("-1", "1.5", "soon", "9" * 20):
        resp = await client.put(
            f"{V3}/rooms/{room}/send/m.room.message/bad{value[:3]}",
            params={DELAY: value},
            json={"body": "x"},
            headers=auth(alice_token),
        )
        assert resp.status == 400, value
        assert (await resp.json())["errcode"] == "M_INVALID_PARAM"
    resp = await client.put(
        f"{V3}/rooms/{room}/state/org.example.s/k",
        params={DELAY: str(86_400_001)},
        json={},
        headers=auth(alice_token),
    )
    body = await resp.json()
    assert resp.status == 400, body
    assert body["org.matrix.msc4140.errcode"] == "M_MAX_DELAY_EXCEEDED"
    assert body["org.matrix.msc4140.max_delay"] == 86_400_000
    resp = await client.put(
        f"{V3}/rooms/{room}/send/m.room.message/parent",
        params={"org.matrix.msc4140.parent_delay_id": delay_id},
        json={"body": "x"},
        headers=auth(alice_token),
    )
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_UNRECOGNIZED"
    # Filtering by delay_id.
    other = await _schedule(client, alice_token, path + "2", 60_000, {"body": "other"})
    listed = await _listed(client, alice_token, delay_id=other)
    assert [e["delay_id"] for e in listed["scheduled"]] == [other]


async def test_someone_elses_state_change_drops_the_scheduled_state(app_client: Any) -> None:
    client = app_client
    alice, alice_token, bob, bob_token, room = await _room_with_bob(client)
    # Bob may set state too.
    levels = await _state(client, room, alice_token, "m.room.power_levels", "")
    levels["users"][bob] = 50
    resp = await client.put(
        f"{V3}/rooms/{room}/state/m.room.power_levels/", json=levels, headers=auth(alice_token)
    )
    assert resp.status == 200, await resp.text()
    etype = "org.example.topic"
    path = f"{V3}/rooms/{room}/state/{etype}/shared"
    # Alice's own change of that state keeps her scheduled one.
    mine = await _schedule(client, alice_token, path, 3_000, {"v": "alice later"})
    resp = await client.put(path, json={"v": "alice now"}, headers=auth(alice_token))
    assert resp.status == 200
    await asyncio.sleep(0.3)
    listed = (await _listed(client, alice_token))["scheduled"]
    assert [e["delay_id"] for e in listed] == [mine]
    # Bob's change drops it: his newer decision is not overwritten by her old timer.
    resp = await client.put(path, json={"v": "bob"}, headers=auth(bob_token))
    assert resp.status == 200

    async def dropped() -> bool:
        return not (await _listed(client, alice_token))["scheduled"]

    assert await _until(dropped)
    await asyncio.sleep(3.2)  # past its time: nothing overwrites Bob's state
    assert await _state(client, room, bob_token, etype, "shared") == {"v": "bob"}
    assert (await _act(client, mine, "restart")).status == 404


async def test_a_send_that_fails_is_finalised_with_its_error(app_client: Any) -> None:
    client = app_client
    alice, alice_token, _, bob_token, room = await _room_with_bob(client)
    path = f"{V3}/rooms/{room}/send/m.room.message/gone"
    delay_id = await _schedule(client, alice_token, path, 1500, {"body": "after leaving"})
    await leave_room(client, room, alice)

    async def finalised() -> list[dict[str, Any]]:
        return list((await _listed(client, alice_token))["finalised"])

    (done,) = await _until(finalised)
    assert done["delayed_event"]["delay_id"] == delay_id
    assert done["outcome"] == "send" and done["reason"] == "error"
    assert done["error"]["errcode"] == "M_FORBIDDEN" and "event_id" not in done
    assert await _messages(client, room, bob_token, "after leaving") == []
    # Sent now by its owner: they are told why it was not, and it is finalised too.
    path = f"{V3}/rooms/{room}/send/m.room.message/now"
    now = await _schedule(client, alice_token, path, 60_000, {"body": "now, after leaving"})
    resp = await _act(client, now, "send", alice_token)
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"
    assert (await _act(client, now, "send")).status == 404
    assert (await _listed(client, alice_token))["scheduled"] == []


async def test_managing_is_rate_limited_per_owner_and_unknown_ids_per_address(
    aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    config = tmp_config(
        rc_enabled=True, rc_delayed_event_mgmt={"per_second": 0.01, "burst_count": 3}
    )
    client = await aiohttp_client(create_app(config))
    _, alice_token, _, _, room = await _room_with_bob(client)
    path = f"{V3}/rooms/{room}/send/m.room.message/rl"
    delay_id = await _schedule(client, alice_token, path, 60_000, {"body": "x"})
    statuses = [(await _act(client, delay_id, "restart")).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    guesses = [(await _act(client, f"dly_guess{i}", "send")).status for i in range(4)]
    assert guesses == [404, 404, 404, 429]


@in_process_only
async def test_at_most_so_many_scheduled_per_user(
    app_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "MAX_SCHEDULED_PER_USER", 3)
    _, alice_token, _, _, room = await _room_with_bob(app_client)
    for i in range(3):
        path = f"{V3}/rooms/{room}/send/m.room.message/lim{i}"
        await _schedule(app_client, alice_token, path, 60_000, {"body": str(i)})
    resp = await app_client.put(
        f"{V3}/rooms/{room}/send/m.room.message/lim3",
        params={DELAY: "60000"},
        json={"body": "3"},
        headers=auth(alice_token),
    )
    body = await resp.json()
    assert resp.status == 400 and body["org.matrix.msc4140.errcode"] == (
        "M_MAX_DELAYED_EVENTS_EXCEEDED"
    )
    assert len((await _listed(app_client, alice_token))["scheduled"]) == 3


@in_process_only
async def test_schedules_survive_a_restart_and_a_crash_does_not_send_twice(
    database_settings: dict[str, Any], aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    config = tmp_config(**database_settings)
    client = await aiohttp_client(create_app(config))
    _, alice_token, _, bob_token, room = await _room_with_bob(client)
    path = f"{V3}/rooms/{room}/send/m.room.message"
    await _schedule(client, alice_token, path + "/a", 400, {"body": "due while down"})
    crashed = await _schedule(client, alice_token, path + "/b", 100, {"body": "crash"})
    # The process dies between sending "crash" and recording that it did.
    store = client.server.app[DELAYED_EVENTS]._store
    real = store.finalise

    async def killed(event: Any, outcome: str, *args: Any, **kw: Any) -> bool:
        if event.delay_id == crashed:
            raise asyncio.CancelledError
        return bool(await real(event, outcome, *args, **kw))

    store.finalise = killed
    assert await _until(lambda: _messages(client, room, bob_token, "crash"))
    await client.close()
    await asyncio.sleep(0.5)  # "due while down" comes due while no process runs

    client = await aiohttp_client(create_app(config))
    assert await _until(lambda: _messages(client, room, bob_token, "due while down"))
    finalised = await _until(lambda: _finalised_ids(client, alice_token, 2), timeout_s=5)
    assert crashed in finalised
    # Sent again after the restart with the same transaction: the first event answers.
    (event,) = await _messages(client, room, bob_token, "crash")
    listed = (await _listed(client, alice_token))["finalised"]
    assert {f["event_id"] for f in listed if f["delayed_event"]["delay_id"] == crashed} == {
        event["event_id"]
    }
    assert len(await _messages(client, room, bob_token, "due while down")) == 1


async def _finalised_ids(client: Any, token: str, count: int) -> set[str]:
    listed = (await _listed(client, token))["finalised"]
    ids = {f["delayed_event"]["delay_id"] for f in listed}
    return ids if len(ids) >= count else set()


def test_a_delayed_send_is_routed_to_the_main_not_the_rooms_persister() -> None:
    """With workers the main runs the timer: a delayed send has no room shard."""

    class Request:
        method = "PUT"
        path = "/_matrix/client/v3/rooms/!r:x/send/m.room.message/t"
        headers = {"Authorization": "Bearer t"}
        query: dict[str, str] = {}

    request: Any = Request()
    assert _shard_key(request) == "!r:x"
    request.query = {DELAY: "1000"}
    assert _shard_key(request) is None


async def test_switched_off_they_are_not_offered_and_refused(
    aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    client = await aiohttp_client(create_app(tmp_config(max_event_delay_duration=0)))
    versions = await (await client.get("/_matrix/client/versions")).json()
    assert versions["unstable_features"]["org.matrix.msc4140"] is False
    _, alice_token, _, bob_token, room = await _room_with_bob(client)
    resp = await client.put(
        f"{V3}/rooms/{room}/send/m.room.message/off",
        params={DELAY: "1000"},
        json={"body": "off"},
        headers=auth(alice_token),
    )
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"
    assert await _messages(client, room, bob_token, "off") == []


@in_process_only
async def test_a_database_outage_is_retried_and_other_failures_are_recorded(
    app_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outage while sending leaves the event scheduled and the timer tries again; any
    other failure (one that would come back every time) is recorded once, not retried
    forever."""
    from homeserver.storage.errors import DatabaseUnavailableError, UnstorableValueError

    monkeypatch.setattr(service_module, "RETRY_S", 0.2)
    client = app_client
    _, alice_token, _, bob_token, room = await _room_with_bob(client)
    sender = client.server.app[DELAYED_EVENTS]._sender
    real = sender.send_message
    failures = {"outage": 2, "poison": 0}

    async def flaky(room_id: str, user_id: str, etype: str, content: Any, *a: Any) -> str:
        if content.get("body") == "poison":
            failures["poison"] += 1
            raise UnstorableValueError("the database refuses this value")
        if content.get("body") == "outage" and failures["outage"]:
            failures["outage"] -= 1
            raise DatabaseUnavailableError("restarting")
        return str(await real(room_id, user_id, etype, content, *a))

    monkeypatch.setattr(sender, "send_message", flaky)
    path = f"{V3}/rooms/{room}/send/m.room.message"
    poison = await _schedule(client, alice_token, path + "/p", 200, {"body": "poison"})
    await _schedule(client, alice_token, path + "/o", 200, {"body": "outage"})
    assert await _until(lambda: _messages(client, room, bob_token, "outage"))
    assert failures["outage"] == 0

    async def recorded() -> list[dict[str, Any]]:
        listed = (await _listed(client, alice_token))["finalised"]
        return [f for f in listed if f["delayed_event"]["delay_id"] == poison]

    (done,) = await _until(recorded)
    assert done["reason"] == "error" and done["error"]["errcode"] == "M_UNKNOWN"
    await asyncio.sleep(0.5)
    assert failures["poison"] == 1
