"""Device-list changes across two of our servers on loopback.

alice on A and bob on B share a room. A new login of alice, her key upload, her
cross-signing keys and the deletion of a device must each reach B as an EDU
(`m.device_list_update` with stream_id/prev_id chained per user, `m.signing_key_update`),
show up in bob's incremental /sync `device_lists.changed`, and be visible in bob's
/keys/query of alice (answered by A). GET /user/devices answers the stream_id of the
last update.
"""

from __future__ import annotations

from typing import Any

import pytest
import signedjson.key
import signedjson.sign

from federation.appkeys import QUERIES, SENDER
from tests.federation.multiserver import LoopbackServer, eventually

Recorded = list[tuple[list[str], str, dict[str, Any]]]


def record_edus(server: LoopbackServer) -> Recorded | None:
    """Wrap the server's sender so every device-list EDU it queues is also recorded.
    None when the server is a worker deployment (its sender is another process's
    memory): the test then checks what the users see, the EDUs' chaining only in
    process."""
    if server.as_deployment:
        return None
    sender = server.app[SENDER]
    original = sender.send_edu
    seen: list[tuple[list[str], str, dict[str, Any]]] = []

    async def send_edu(destinations, edu_type, content):  # type: ignore[no-untyped-def]
        if edu_type in ("m.device_list_update", "m.signing_key_update"):
            seen.append((list(destinations), edu_type, dict(content)))
        await original(destinations, edu_type, content)

    sender.send_edu = send_edu  # type: ignore[method-assign]
    return seen


async def login(server: LoopbackServer, user: str) -> tuple[str, str]:
    """A second login of `user`: (access token, device ID)."""
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": "pw-" + user[1:].partition(":")[0],
    }
    data = await server.ok("POST", "/login", body=body)
    return data["access_token"], data["device_id"]


def signed_device_keys(user: str, device: str) -> dict[str, Any]:
    sk = signedjson.key.generate_signing_key(device)
    keys = {
        "user_id": user,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            f"curve25519:{device}": "c" * 43,
            f"ed25519:{device}": signedjson.key.encode_verify_key_base64(sk.verify_key),
        },
    }
    return signedjson.sign.sign_json(keys, user, sk)


async def shared_room(a: LoopbackServer, b: LoopbackServer) -> tuple[str, str, str]:
    alice = await a.register("alice")
    bob = await b.register("bob")
    room_id = await a.create_room(alice)
    await b.join(bob, room_id, [a.name])
    return alice, bob, room_id


async def changed_for(server: LoopbackServer, user: str, since: str, target: str) -> str | None:
    """Incremental syncs from `since` until `target` is in device_lists.changed; returns
    the next_batch of that sync."""

    async def check() -> str | None:
        data = await server.ok("GET", "/sync", user, timeout="0", since=since)
        if target in data.get("device_lists", {}).get("changed", []):
            return data["next_batch"]
        return None

    return await eventually(check)


async def test_new_device_keys_and_deletion_reach_the_other_server(pair) -> None:
    a, b = pair
    alice, bob, _room = await shared_room(a, b)
    edus = record_edus(a)
    since = (await b.sync(bob))["next_batch"]

    # 1. A new login: B learns of it, bob must re-fetch alice's devices.
    token, device = await login(a, alice)
    since = await changed_for(b, bob, since, alice)
    if edus is not None:
        assert [e[1] for e in edus] == ["m.device_list_update"]
        dests, _, first = edus[0]
        assert dests == [b.name]
        assert first["user_id"] == alice and first["device_id"] == device
        assert first["deleted"] is False and "keys" not in first
        assert isinstance(first["stream_id"], int) and isinstance(first["prev_id"], list)

    # 2. Her keys for the new device: the EDU carries them, chained on the last one.
    keys = signed_device_keys(alice, device)
    a.tokens["alice-2"] = token
    await a.ok("POST", "/keys/upload", "alice-2", {"device_keys": keys})
    since = await changed_for(b, bob, since, alice)
    if edus is not None:
        second = edus[-1][2]
        assert second["device_id"] == device and second["prev_id"] == [first["stream_id"]]
        assert second["stream_id"] > first["stream_id"]
        assert second["keys"]["keys"] == keys["keys"]
        assert second["keys"]["signatures"] == keys["signatures"]
    queried = await b.ok("POST", "/keys/query", bob, {"device_keys": {alice: []}})
    assert queried["failures"] == {}
    assert queried["device_keys"][alice][device]["keys"] == keys["keys"]

    if edus is not None:
        # GET /user/devices answers the stream_id of the latest update.
        answer = await b.app[QUERIES].user_devices(alice)
        assert answer["stream_id"] == second["stream_id"]
        assert device in [d["device_id"] for d in answer["devices"]]

    # 3. Deleting the device: deleted=True, and it is gone from B's query.
    await a.ok("POST", "/logout", "alice-2", {})
    await changed_for(b, bob, since, alice)
    if edus is not None:
        third = edus[-1][2]
        assert third == {
            "user_id": alice,
            "device_id": device,
            "stream_id": third["stream_id"],
            "prev_id": [second["stream_id"]],
            "deleted": True,
        }
    queried = await b.ok("POST", "/keys/query", bob, {"device_keys": {alice: []}})
    assert device not in queried["device_keys"][alice]


async def test_cross_signing_keys_reach_the_other_server(pair) -> None:
    a, b = pair
    alice, bob, _room = await shared_room(a, b)
    edus = record_edus(a)
    since = (await b.sync(bob))["next_batch"]

    master = signedjson.key.generate_signing_key("m")
    master_pub = signedjson.key.encode_verify_key_base64(master.verify_key)
    ssk = signedjson.key.generate_signing_key("s")
    ssk_pub = signedjson.key.encode_verify_key_base64(ssk.verify_key)
    master_key = {
        "user_id": alice,
        "usage": ["master"],
        "keys": {f"ed25519:{master_pub}": master_pub},
    }
    self_signing = signedjson.sign.sign_json(
        {"user_id": alice, "usage": ["self_signing"], "keys": {f"ed25519:{ssk_pub}": ssk_pub}},
        alice,
        _named(master, master_pub),
    )
    await a.ok(
        "POST",
        "/keys/device_signing/upload",
        alice,
        {"master_key": master_key, "self_signing_key": self_signing},
    )
    await changed_for(b, bob, since, alice)
    if edus is not None:
        assert [e[1] for e in edus] == ["m.signing_key_update"]
        dests, _, content = edus[0]
        assert dests == [b.name]
        assert content == {
            "user_id": alice,
            "master_key": master_key,
            "self_signing_key": self_signing,
        }
    queried = await b.ok("POST", "/keys/query", bob, {"device_keys": {alice: []}})
    assert queried["master_keys"][alice]["keys"] == master_key["keys"]
    assert queried["self_signing_keys"][alice]["keys"] == self_signing["keys"]


def _named(key: Any, public: str) -> Any:
    """signedjson names a key's signature `ed25519:<version>`: make it the public key."""
    key.version = public
    return key


async def test_a_new_device_on_b_reaches_alice_on_a(pair) -> None:
    a, b = pair
    alice, bob, _room = await shared_room(a, b)
    since = (await a.sync(alice))["next_batch"]
    _token, device = await login(b, bob)
    await changed_for(a, alice, since, bob)
    queried = await a.ok("POST", "/keys/query", alice, {"device_keys": {bob: []}})
    assert queried["failures"] == {}
    assert bob in queried["device_keys"]


async def test_no_edu_for_a_user_sharing_no_room(pair) -> None:
    a, b = pair
    alice = await a.register("alice")
    await b.register("bob")
    edus = record_edus(a)
    if edus is None:
        pytest.skip("checks that no EDU is queued, in the sender's memory")
    await login(a, alice)
    assert edus == []


@pytest.mark.parametrize("shared", [False, True], ids=["names_private", "names_shared"])
async def test_a_device_rename_reaches_the_other_server(loopback, shared: bool) -> None:
    """A rename is announced like Synapse does; the name itself crosses only with
    `allow_device_name_lookup_over_federation` (off by default, Synapse's privacy
    default): not in the update, not in /user/devices, not in the keys' unsigned."""
    settings = {"allow_device_name_lookup_over_federation": shared}
    a, b = await loopback("a", **settings), await loopback("b")
    alice, bob, _room = await shared_room(a, b)
    token, device = await login(a, alice)
    a.tokens["alice-2"] = token
    await a.ok(
        "POST", "/keys/upload", "alice-2", {"device_keys": signed_device_keys(alice, device)}
    )
    since = (await b.sync(bob))["next_batch"]
    edus = record_edus(a)
    await a.ok("PUT", f"/devices/{device}", "alice-2", {"display_name": "Alice's phone"})
    await changed_for(b, bob, since, alice)
    expected = "Alice's phone" if shared else None
    if edus is not None:
        assert [e[1] for e in edus] == ["m.device_list_update"]
        update = edus[-1][2]
        assert update["device_id"] == device
        assert update.get("device_display_name") == expected
        assert "device_display_name" not in update["keys"].get("unsigned", {}) or shared
        answer = await b.app[QUERIES].user_devices(alice)
        names = {d["device_id"]: d.get("device_display_name") for d in answer["devices"]}
        assert names[device] == expected
    # What bob's client is told, on every deployment: the keys' unsigned name.
    queried = await b.ok("POST", "/keys/query", bob, {"device_keys": {alice: [device]}})
    unsigned = queried["device_keys"][alice][device].get("unsigned", {})
    assert unsigned.get("device_display_name") == expected
    # Alice's own server still shows her devices' names to local users.
    mine = await a.ok("POST", "/keys/query", alice, {"device_keys": {alice: [device]}})
    assert mine["device_keys"][alice][device]["unsigned"]["device_display_name"] == "Alice's phone"
