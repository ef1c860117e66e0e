"""Dehydrated devices (MSC3814, homeserver/e2ee/dehydration.py), through the client API.

What a user relies on: while every real device of theirs is offline, others' clients
find the dehydrated device's keys (query, claim) and send to it; a new login fetches
what was sent, page by page, each page acknowledged by the next request; replacing or
deleting it (directly, with /delete_devices) removes the old device and its keys. What
must not work: reading another device's messages through it, taking over a real
device's ID, another user's keys. Both backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from homeserver.app import create_app
from homeserver.config import Config
from tests.client.helpers import auth, register_user
from tests.client.test_accounts_account import _password_auth

V3 = "/_matrix/client/v3"
DD = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"
DATA = {"algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": "encrypted-pickle"}


def _keys(user_id: str, device_id: str) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {f"curve25519:{device_id}": "curve" + device_id, f"ed25519:{device_id}": "ed"},
        "signatures": {user_id: {f"ed25519:{device_id}": "sig"}},
        "dehydrated": True,
    }


def _body(user_id: str, device_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "device_data": DATA,
        "initial_device_display_name": "Dehydrated device",
        "device_keys": _keys(user_id, device_id),
        "one_time_keys": {"signed_curve25519:AAAA": {"key": "otk1", "signatures": {}}},
        "fallback_keys": {"signed_curve25519:BBBB": {"key": "fb", "fallback": True}},
        **extra,
    }


async def _device_ids(client: Any, token: str) -> set[str]:
    resp = await client.get(f"{V3}/devices", headers=auth(token))
    assert resp.status == 200
    return {d["device_id"] for d in (await resp.json())["devices"]}


async def _queried(client: Any, token: str, user_id: str) -> set[str]:
    resp = await client.post(
        f"{V3}/keys/query", json={"device_keys": {user_id: []}}, headers=auth(token)
    )
    assert resp.status == 200, await resp.text()
    return set((await resp.json())["device_keys"].get(user_id, {}))


async def _send_to_device(client: Any, token: str, user_id: str, device_id: str, n: int) -> None:
    for i in range(n):
        resp = await client.put(
            f"{V3}/sendToDevice/m.room.encrypted/t{device_id}{i}",
            json={"messages": {user_id: {device_id: {"ciphertext": f"c{i}"}}}},
            headers=auth(token),
        )
        assert resp.status == 200, await resp.text()


async def test_a_dehydrated_device_receives_while_the_user_is_offline(
    database_settings: dict[str, Any], aiohttp_client: Any, tmp_config: Callable[..., Config]
) -> None:
    client = await aiohttp_client(create_app(tmp_config(**database_settings)))
    alice = await register_user(client, "alice")
    bob = await register_user(client, "bob")
    a, b = alice["access_token"], bob["access_token"]
    me = alice["user_id"]
    versions = await (await client.get("/_matrix/client/versions")).json()
    assert versions["unstable_features"]["org.matrix.msc3814"] is True
    # Supported, none yet: M_NOT_FOUND (clients read M_UNRECOGNIZED as "not supported").
    for method in ("GET", "DELETE"):
        resp = await client.request(method, DD, headers=auth(a))
        assert resp.status == 404 and (await resp.json())["errcode"] == "M_NOT_FOUND"

    resp = await client.put(DD, json=_body(me, "DEHY1"), headers=auth(a))
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"device_id": "DEHY1"}
    resp = await client.get(DD, headers=auth(a))
    assert await resp.json() == {"device_id": "DEHY1", "device_data": DATA}
    assert "DEHY1" in await _device_ids(client, a)
    # Bob's client finds it and claims its one-time key.
    assert "DEHY1" in await _queried(client, b, me)
    resp = await client.post(
        f"{V3}/keys/claim",
        json={"one_time_keys": {me: {"DEHY1": "signed_curve25519"}}},
        headers=auth(b),
    )
    claimed = (await resp.json())["one_time_keys"][me]["DEHY1"]
    assert list(claimed) == ["signed_curve25519:AAAA"]

    # Bob sends while Alice is offline; her next login reads it, page by page.
    await _send_to_device(client, b, me, "DEHY1", 103)
    path = f"{DD}/DEHY1/events"
    first = await (await client.post(path, json={}, headers=auth(a))).json()
    assert len(first["events"]) == 100
    assert first["events"][0] == {
        "sender": bob["user_id"],
        "type": "m.room.encrypted",
        "content": {"ciphertext": "c0"},
    }
    assert first["next_batch"].startswith("d")
    second = await (
        await client.post(path, json={"next_batch": first["next_batch"]}, headers=auth(a))
    ).json()
    assert [e["content"]["ciphertext"] for e in second["events"]] == ["c100", "c101", "c102"]
    third = await (
        await client.post(path, json={"next_batch": second["next_batch"]}, headers=auth(a))
    ).json()
    assert third["events"] == []
    # Acknowledged means deleted: a request from the start finds nothing either.
    again = await (await client.post(path, json={}, headers=auth(a))).json()
    assert again["events"] == []

    # Replaced: the old device, its keys and its messages go.
    await _send_to_device(client, b, me, "DEHY1", 1)
    resp = await client.put(DD, json=_body(me, "DEHY2"), headers=auth(a))
    assert resp.status == 200, await resp.text()
    devices = await _device_ids(client, a)
    assert "DEHY2" in devices and "DEHY1" not in devices
    queried = await _queried(client, b, me)
    assert "DEHY2" in queried and "DEHY1" not in queried
    resp = await client.post(path, json={}, headers=auth(a))
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"
    resp = await client.delete(DD, headers=auth(a))
    assert await resp.json() == {"device_id": "DEHY2"}
    assert (await client.get(DD, headers=auth(a))).status == 404
    assert "DEHY2" not in await _device_ids(client, a)


async def test_what_a_dehydrated_device_cannot_be_used_for(app_client: Any) -> None:
    client = app_client
    alice = await register_user(client, "alice")
    bob = await register_user(client, "bob")
    a, me = alice["access_token"], alice["user_id"]
    # Not another of the user's devices (it would take over its keys), nor Bob's keys.
    resp = await client.put(DD, json=_body(me, alice["device_id"]), headers=auth(a))
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_INVALID_PARAM"
    resp = await client.put(
        DD, json={**_body(me, "X1"), "device_keys": _keys(bob["user_id"], "X1")}, headers=auth(a)
    )
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_INVALID_PARAM"
    missing = {k: v for k, v in _body(me, "X2").items() if k != "device_keys"}
    resp = await client.put(DD, json=missing, headers=auth(a))
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_MISSING_PARAM"
    huge = {**_body(me, "X3"), "device_data": {"algorithm": "a", "pad": "x" * (1 << 20)}}
    resp = await client.put(DD, json=huge, headers=auth(a))
    assert resp.status in (413,), await resp.text()
    for bad in ({"device_data": "x"}, {"device_id": ""}, {"device_id": 5}):
        resp = await client.put(DD, json={**_body(me, "X4"), **bad}, headers=auth(a))
        assert resp.status == 400, bad
    # Nothing was created by the refused requests.
    assert await _device_ids(client, a) == {alice["device_id"]}
    assert (await client.get(DD, headers=auth(a))).status == 404
    # A real device's messages cannot be read through this endpoint.
    resp = await client.put(DD, json=_body(me, "DEHY"), headers=auth(a))
    assert resp.status == 200
    other = f"{DD}/{alice['device_id']}/events"
    resp = await client.post(other, json={}, headers=auth(a))
    assert resp.status == 403
    resp = await client.post(f"{DD}/DEHY/events", json={"next_batch": "x1"}, headers=auth(a))
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_INVALID_PARAM"
    assert (await client.get(DD)).status == 401
    # Bob has none: Alice's is hers only.
    assert (await client.get(DD, headers=auth(bob["access_token"]))).status == 404
    # Deleted with /delete_devices like any device: forgotten as the dehydrated one too.
    resp = await client.post(
        f"{V3}/delete_devices",
        json={"devices": ["DEHY"], "auth": _password_auth("alice")},
        headers=auth(a),
    )
    assert resp.status == 200, await resp.text()
    assert (await client.get(DD, headers=auth(a))).status == 404


async def test_racing_replacements_leave_one_dehydrated_device(app_client: Any) -> None:
    """Clients replace the dehydrated device at once (two logins of one user): each PUT
    deletes the old one and creates its own; the losers must not stay behind as devices
    with keys that nobody holds."""
    client = app_client
    alice = await register_user(client, "alice")
    a, me = alice["access_token"], alice["user_id"]
    ids = [f"RACE{i}" for i in range(6)]
    answers = await asyncio.gather(
        *(client.put(DD, json=_body(me, device_id), headers=auth(a)) for device_id in ids)
    )
    assert [r.status for r in answers] == [200] * len(ids)
    current = (await (await client.get(DD, headers=auth(a))).json())["device_id"]
    assert current in ids
    assert await _device_ids(client, a) == {alice["device_id"], current}
    assert await _queried(client, a, me) == {current}  # (the login uploaded no keys)
