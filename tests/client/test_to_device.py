"""/sendToDevice and the E2EE sync extension: delivery exactly once, txn idempotency,
device-list changes and key counts."""

from __future__ import annotations

import json
from typing import Any

from homeserver.appstate import DEVICE_LISTS, E2EE_KEYS, NOTIFIER, STORES, TO_DEVICE
from homeserver.e2ee.sync_extension import E2eeSyncExtension
from homeserver.storage.to_device import ToDeviceStore
from homeserver.sync.extensions import SyncContext
from homeserver.sync.tokens import StreamToken
from tests.client.helpers import (
    auth,
    deployed,
    device_token,
    eventually,
    join_room,
    leave_room,
    make_room,
    make_user,
)

# A /sync of the E2EE sections only (a deployment: the test syncs over HTTP).
E2EE_ONLY = json.dumps(
    {
        "room": {"rooms": []},
        "presence": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
    }
)


def extension(client: Any) -> E2eeSyncExtension:
    """The extension the sync builder runs, over the app's E2EE services."""
    app = client.server.app
    return E2eeSyncExtension(app[E2EE_KEYS], app[TO_DEVICE], app[DEVICE_LISTS])


async def sync(
    client: Any, user_id: str, device_id: str, since: StreamToken | None
) -> tuple[dict[str, Any], StreamToken]:
    """Run the extension the way the sync builder does: up to the notifier's position.
    Against a deployment, a /sync as that device (its E2EE sections, empty ones left
    out as the extension leaves them out)."""
    if deployed(client):
        return await _sync_over_http(client, user_id, device_id, since)
    now = client.server.app[NOTIFIER].current
    ctx = SyncContext(user_id, device_id, since, now, False, frozenset())
    response: dict[str, Any] = {}
    await extension(client).top_level(ctx, response)
    return response, now


async def _sync_over_http(
    client: Any, user_id: str, device_id: str, since: StreamToken | None
) -> tuple[dict[str, Any], StreamToken]:
    params = {"timeout": "0", "filter": E2EE_ONLY}
    if since is not None:
        params["since"] = since.encode()
    headers = auth(device_token(client, user_id, device_id))
    response = await client.get("/_matrix/client/v3/sync", params=params, headers=headers)
    assert response.status == 200, await response.text()
    body = await response.json()
    e2ee = {
        key: body[key]
        for key in (
            "to_device",
            "device_lists",
            "device_one_time_keys_count",
            "device_unused_fallback_key_types",
        )
        if key in body
    }
    if not e2ee.get("to_device", {}).get("events"):
        e2ee.pop("to_device", None)
    lists = e2ee.get("device_lists", {})
    if not (lists.get("changed") or lists.get("left")):
        e2ee.pop("device_lists", None)
    return e2ee, StreamToken.decode(body["next_batch"])


def delivered(count: int) -> Any:
    """For `eventually`: a sync that brought `count` to-device messages (a deployment's
    reader may hear of a message a moment after the main wrote it)."""
    return lambda result: len(result[0].get("to_device", {}).get("events", ())) == count


def lists_changed(result: tuple[dict[str, Any], StreamToken]) -> bool:
    """For `eventually`: a sync that brought device-list news."""
    return "device_lists" in result[0]


async def send(client: Any, token: str, txn: str, messages: Any, etype: str = "m.test") -> Any:
    response = await client.put(
        f"/_matrix/client/v3/sendToDevice/{etype}/{txn}",
        json={"messages": messages},
        headers=auth(token),
    )
    return response.status, await response.json()


async def test_to_device_delivered_exactly_once(app_client: Any) -> None:
    alice, alice_token, _ = await make_user(app_client, "alice")
    bob, _, bob_dev = await make_user(app_client, "bob")
    await make_user(app_client, "bob", "DEVICE2")

    status, body = await send(app_client, alice_token, "t1", {bob: {bob_dev: {"n": 1}}})
    assert (status, body) == (200, {})
    # Same transaction ID again: not queued a second time.
    assert await send(app_client, alice_token, "t1", {bob: {bob_dev: {"n": 1}}}) == (200, {})
    await send(app_client, alice_token, "t2", {bob: {"*": {"n": 2}}})

    first, token1 = await eventually(
        app_client, lambda: sync(app_client, bob, bob_dev, None), delivered(2)
    )
    assert first["to_device"] == {
        "events": [
            {"sender": alice, "type": "m.test", "content": {"n": 1}},
            {"sender": alice, "type": "m.test", "content": {"n": 2}},
        ]
    }
    assert first["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert first["device_unused_fallback_key_types"] == []
    other, _ = await eventually(
        app_client, lambda: sync(app_client, bob, "DEVICE2", None), delivered(1)
    )
    assert other["to_device"]["events"] == [
        {"sender": alice, "type": "m.test", "content": {"n": 2}}
    ]

    # A retry with the same (old) since token gets the same messages again...
    retry, _ = await sync(app_client, bob, bob_dev, None)
    assert retry["to_device"] == first["to_device"]
    # ...and syncing from the newer token acknowledges them: never delivered again.
    second, token2 = await sync(app_client, bob, bob_dev, token1)
    assert "to_device" not in second
    await send(app_client, alice_token, "t3", {bob: {bob_dev: {"n": 3}}})
    third, token3 = await eventually(
        app_client, lambda: sync(app_client, bob, bob_dev, token2), delivered(1)
    )
    assert third["to_device"]["events"] == [
        {"sender": alice, "type": "m.test", "content": {"n": 3}}
    ]
    assert token3.to_device > token2.to_device
    fourth, _ = await sync(app_client, bob, bob_dev, token3)
    assert "to_device" not in fourth
    store = ToDeviceStore(app_client.server.app[STORES].db)
    assert await store.get_messages(bob, bob_dev, 0, 10**9) == []


class FakeRemote:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, dict[str, Any]]] = []

    async def send(self, destination, sender, event_type, message_id, messages) -> None:
        assert isinstance(message_id, str) and message_id
        self.sent.append((destination, sender, event_type, messages))


async def test_remote_and_unknown_targets(app_client: Any) -> None:
    alice, alice_token, _ = await make_user(app_client, "alice")
    bob, _, bob_dev = await make_user(app_client, "bob")
    service = app_client.server.app[TO_DEVICE]
    messages = {"@carol:remote.example": {"D": {"x": 1}}, bob: {"NOSUCHDEVICE": {"x": 2}}}

    service._remote = None  # no federation: remote messages are dropped, counted
    assert (await send(app_client, alice_token, "r1", messages))[0] == 200
    assert service.dropped_remote == 1

    fake = FakeRemote()
    service._remote = fake  # federation present: handed over per destination
    assert (await send(app_client, alice_token, "r2", messages))[0] == 200
    assert fake.sent == [
        ("remote.example", alice, "m.test", {"@carol:remote.example": {"D": {"x": 1}}})
    ]
    response, _ = await sync(app_client, bob, bob_dev, None)
    assert "to_device" not in response  # unknown local devices get nothing


async def test_send_to_device_bad_input(app_client: Any) -> None:
    _, token, _ = await make_user(app_client, "alice")
    bob, _, bob_dev = await make_user(app_client, "bob")
    for messages in ("x", {bob: "x"}, {bob: {bob_dev: "content"}}, {bob: {bob_dev: ["a"]}}):
        status, body = await send(app_client, token, "bad", messages)
        assert (status, body["errcode"]) == (400, "M_BAD_JSON"), messages
    response = await app_client.put(
        "/_matrix/client/v3/sendToDevice/m.test/t", json={"messages": {}}
    )
    assert response.status == 401


async def test_device_lists_changed_and_left(app_client: Any) -> None:
    alice, alice_token, alice_dev = await make_user(app_client, "alice")
    bob, bob_token, bob_dev = await make_user(app_client, "bob")
    room = await make_room(app_client, alice)
    _, since = await sync(app_client, alice, alice_dev, None)

    # Bob joins: a newly shared user counts as changed.
    await join_room(app_client, room, bob)
    response, since2 = await eventually(
        app_client, lambda: sync(app_client, alice, alice_dev, since), lists_changed
    )
    assert response["device_lists"] == {"changed": [bob], "left": []}
    response, _ = await sync(app_client, alice, alice_dev, since2)
    assert "device_lists" not in response

    # Bob uploads device keys: changed again, and /keys/changes agrees.
    from signedjson.key import generate_signing_key

    from tests.client.test_e2ee_keys import device_keys

    status = (
        await app_client.post(
            "/_matrix/client/v3/keys/upload",
            json={"device_keys": device_keys(bob, bob_dev, generate_signing_key("b"))},
            headers=auth(bob_token),
        )
    ).status
    assert status == 200
    response, since3 = await eventually(
        app_client, lambda: sync(app_client, alice, alice_dev, since2), lists_changed
    )
    assert response["device_lists"] == {"changed": [bob], "left": []}
    changes = await app_client.get(
        "/_matrix/client/v3/keys/changes",
        params={"from": since2.encode(), "to": since3.encode()},
        headers=auth(alice_token),
    )
    assert await changes.json() == {"changed": [bob], "left": []}

    # Bob leaves: no longer shares a room with alice.
    await leave_room(app_client, room, bob)
    response, _ = await eventually(
        app_client, lambda: sync(app_client, alice, alice_dev, since3), lists_changed
    )
    assert response["device_lists"] == {"changed": [], "left": [bob]}

    bad = await app_client.get(
        "/_matrix/client/v3/keys/changes",
        params={"from": "nope", "to": since3.encode()},
        headers=auth(alice_token),
    )
    assert (bad.status, (await bad.json())["errcode"]) == (400, "M_INVALID_PARAM")
