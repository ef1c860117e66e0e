"""What a device away for long, or flooded, gets (homeserver/e2ee/to_device.py), on
both backends: at most MAX_PER_SYNC to-device messages per /sync (and per sliding
sync), the rest at once in the next ones, each exactly once and in order; and a
queue that never grows past its cap (the oldest go) whoever sends."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

import homeserver.e2ee.to_device as to_device_module
from homeserver.app import create_app
from homeserver.appstate import STORES
from homeserver.storage.to_device import ToDeviceStore
from homeserver.sync.tokens import StreamToken
from tests.client.helpers import auth, deployed, make_user
from tests.federation.inbound_helpers import RITA, fed, seed_remote_key

E2EE_ONLY = json.dumps(
    {
        "room": {"rooms": []},
        "presence": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
    }
)


@pytest.fixture
async def client(aiohttp_client: Any, tmp_config: Any, database_settings: dict[str, Any]) -> Any:
    return await aiohttp_client(create_app(tmp_config(**database_settings)))


async def send_many(client: Any, token: str, target: str, device: str, n: int, at: int = 0) -> None:
    for i in range(at, at + n):
        body = {"messages": {target: {device: {"n": i}}}}
        r = await client.put(
            f"/_matrix/client/v3/sendToDevice/m.test/t{i}", json=body, headers=auth(token)
        )
        assert r.status == 200, await r.text()


async def sync(client: Any, token: str, since: str | None, timeout: int = 0) -> dict[str, Any]:
    params = {"timeout": str(timeout), "filter": E2EE_ONLY}
    if since is not None:
        params["since"] = since
    r = await client.get("/_matrix/client/v3/sync", params=params, headers=auth(token))
    assert r.status == 200, await r.text()
    return await r.json()


def numbers(response: dict[str, Any]) -> list[int]:
    return [e["content"]["n"] for e in response.get("to_device", {}).get("events", [])]


def store(client: Any) -> ToDeviceStore:
    return ToDeviceStore(client.app[STORES].db)


async def queued(client: Any, user: str, device: str) -> int:
    return len(await store(client).get_messages(user, device, 0, 2**62))


async def test_a_long_queue_comes_a_hundred_at_a_time(client: Any) -> None:
    alice, alice_token, _ = await make_user(client, "alice")
    bob, bob_token, _ = await make_user(client, "bob", "BOBDEV")
    since = (await sync(client, bob_token, None))["next_batch"]
    await send_many(client, alice_token, bob, "BOBDEV", 250)
    got: list[list[int]] = []
    for _ in range(3):
        started = time.monotonic()
        response = await sync(client, bob_token, since, timeout=10_000)
        assert time.monotonic() - started < 5  # more was waiting: no long-poll
        got.append(numbers(response))
        since = response["next_batch"]
    assert got == [list(range(100)), list(range(100, 200)), list(range(200, 250))]
    # The first two tokens stood at their last message; the third at the stream's end,
    # where the next sync (acknowledging everything) waits and finds nothing.
    last = StreamToken.decode(since)
    assert last.to_device == await store(client).get_max_position()
    response = await sync(client, bob_token, since)
    assert numbers(response) == []
    assert await queued(client, bob, "BOBDEV") == 0
    # An initial sync gets the oldest hundred too (and its token says where they end).
    await send_many(client, alice_token, bob, "BOBDEV", 150, at=1000)
    first = await sync(client, bob_token, None)
    assert numbers(first) == list(range(1000, 1100))
    assert numbers(await sync(client, bob_token, first["next_batch"])) == list(range(1100, 1150))


async def test_sliding_sync_to_device_comes_a_hundred_at_a_time(client: Any) -> None:
    alice, alice_token, _ = await make_user(client, "alice")
    bob, bob_token, _ = await make_user(client, "bob", "BOBDEV")
    await send_many(client, alice_token, bob, "BOBDEV", 130)
    got: list[int] = []
    since: str | None = None
    for _ in range(3):
        ext: dict[str, Any] = {"enabled": True}
        if since is not None:
            ext["since"] = since
        r = await client.post(
            "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
            json={"lists": {}, "extensions": {"to_device": ext}},
            params={"timeout": "0"},
            headers=auth(bob_token),
        )
        assert r.status == 200, await r.text()
        to_device = (await r.json()).get("extensions", {}).get("to_device")
        if to_device is None:
            break
        got += [e["content"]["n"] for e in to_device["events"]]
        since = to_device["next_batch"]
    assert got == list(range(130))
    assert await queued(client, bob, "BOBDEV") == 0


def skip_patched_cap(client: Any) -> None:
    if deployed(client):
        pytest.skip("patches the cap in this process; the deployment's processes keep 100,000")


async def test_a_flooded_device_keeps_only_the_newest(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mallory floods a device that never syncs: its queue stays under the cap plus one
    check's worth, the oldest going; when it syncs, it gets the newest, in order."""
    skip_patched_cap(client)
    monkeypatch.setattr(to_device_module, "MAX_QUEUED_PER_DEVICE", 40)
    monkeypatch.setattr(to_device_module, "CAP_CHECK_EVERY", 10)
    _, mallory_token, _ = await make_user(client, "mallory")
    bob, bob_token, _ = await make_user(client, "bob", "BOBDEV")
    for start in range(0, 120, 10):
        await send_many(client, mallory_token, bob, "BOBDEV", 10, at=start)
        assert await queued(client, bob, "BOBDEV") <= 40 + 10
    got: list[int] = []
    since = None
    while True:
        response = await sync(client, bob_token, since)
        since = response["next_batch"]
        if not numbers(response):
            break
        got += numbers(response)
    assert got == list(range(120 - len(got), 120)) and 40 <= len(got) <= 50


async def test_another_server_flooding_a_device_is_capped_too(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    skip_patched_cap(client)
    monkeypatch.setattr(to_device_module, "MAX_QUEUED_PER_DEVICE", 40)
    monkeypatch.setattr(to_device_module, "CAP_CHECK_EVERY", 10)
    await seed_remote_key(client)
    bob, _, _ = await make_user(client, "bob", "BOBDEV")
    for t in range(12):
        edus = [
            {
                "edu_type": "m.direct_to_device",
                "content": {
                    "sender": RITA,
                    "type": "m.x",
                    "message_id": f"m{t}-{i}",
                    "messages": {bob: {"BOBDEV": {"n": t * 10 + i}}},
                },
            }
            for i in range(10)
        ]
        body = {"origin": "remote.test", "origin_server_ts": 1, "pdus": [], "edus": edus}
        status, answer = await fed(client, "PUT", f"/_matrix/federation/v1/send/f{t}", body)
        assert status == 200, answer
        assert await queued(client, bob, "BOBDEV") <= 40 + 10
    newest = await store(client).get_messages(bob, "BOBDEV", 0, 2**62)
    assert [m.content["n"] for _, m in newest][-1] == 119
