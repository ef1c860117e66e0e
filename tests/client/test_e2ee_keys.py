"""/keys/*: upload, query, claim, fallback keys, cross-signing, signatures, bad input."""

from __future__ import annotations

from typing import Any

from signedjson.key import encode_verify_key_base64, generate_signing_key
from signedjson.sign import sign_json

from tests.client.helpers import auth, eventually, make_user

KEYS = "/_matrix/client/v3/keys"


def device_keys(user_id: str, device_id: str, signing_key: Any) -> dict[str, Any]:
    """A device_keys object signed by the device's own ed25519 key."""
    keys = {
        "user_id": user_id,
        "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            f"curve25519:{device_id}": "curve+" + device_id,
            f"ed25519:{device_id}": encode_verify_key_base64(signing_key.verify_key),
        },
    }
    signing_key.version = device_id
    return sign_json(keys, user_id, signing_key)


def cross_signing_key(user_id: str, usage: str, key: Any, signer: Any = None) -> dict[str, Any]:
    public = encode_verify_key_base64(key.verify_key)
    obj = {"user_id": user_id, "usage": [usage], "keys": {f"ed25519:{public}": public}}
    if signer is not None:
        signer_public = encode_verify_key_base64(signer.verify_key)
        signer.version = signer_public
        obj = sign_json(obj, user_id, signer)
    return obj


async def post(client: Any, path: str, token: str, body: Any) -> tuple[int, Any]:
    response = await client.post(KEYS + path, json=body, headers=auth(token))
    return response.status, await response.json()


async def test_upload_query_claim_round_trip(app_client: Any) -> None:
    alice, alice_token, alice_dev = await make_user(app_client, "alice")
    bob, bob_token, _ = await make_user(app_client, "bob")
    signing = generate_signing_key("x")
    keys = device_keys(alice, alice_dev, signing)
    otks = {
        "signed_curve25519:AAAAAQ": {"key": "otk1", "signatures": {}},
        "signed_curve25519:AAAAAg": {"key": "otk2", "signatures": {}},
    }
    status, body = await post(
        app_client, "/upload", alice_token, {"device_keys": keys, "one_time_keys": otks}
    )
    assert status == 200, body
    assert body == {"one_time_key_counts": {"signed_curve25519": 2}}

    status, body = await post(app_client, "/query", bob_token, {"device_keys": {alice: []}})
    assert status == 200
    expected = dict(keys)
    expected["unsigned"] = {"device_display_name": "alice's DEVICE1"}
    assert body["device_keys"] == {alice: {alice_dev: expected}}
    assert body["failures"] == {}
    assert body["master_keys"] == {}

    # Querying a specific unknown device gives an empty map for the user.
    status, body = await post(app_client, "/query", bob_token, {"device_keys": {alice: ["NOPE"]}})
    assert body["device_keys"] == {alice: {}}

    claims = []
    for _ in range(3):
        status, body = await post(
            app_client,
            "/claim",
            bob_token,
            {"one_time_keys": {alice: {alice_dev: "signed_curve25519"}}},
        )
        assert status == 200
        claims.append(body["one_time_keys"])
    assert claims[0] == {
        alice: {alice_dev: {"signed_curve25519:AAAAAQ": otks["signed_curve25519:AAAAAQ"]}}
    }
    assert claims[1] == {
        alice: {alice_dev: {"signed_curve25519:AAAAAg": otks["signed_curve25519:AAAAAg"]}}
    }
    assert claims[2] == {}  # each one-time key is handed out exactly once

    status, body = await post(app_client, "/upload", alice_token, {})
    assert body == {"one_time_key_counts": {"signed_curve25519": 0}}


async def test_fallback_key_is_reused_and_marked_used(app_client: Any) -> None:
    alice, alice_token, alice_dev = await make_user(app_client, "alice")
    _, bob_token, _ = await make_user(app_client, "bob")
    fallback = {"signed_curve25519:FB1": {"key": "fb1", "fallback": True, "signatures": {}}}
    status, body = await post(app_client, "/upload", alice_token, {"fallback_keys": fallback})
    assert status == 200, body

    async def unused() -> Any:
        """As /sync tells the device (a deployment: a client reader, which hears of
        the main's key writes a moment later)."""
        response = await app_client.get("/_matrix/client/v3/sync", headers=auth(alice_token))
        assert response.status == 200, await response.text()
        return (await response.json())["device_unused_fallback_key_types"]

    async def expect_unused(types: list[str]) -> None:
        assert await eventually(app_client, unused, lambda got: got == types) == types

    await expect_unused(["signed_curve25519"])
    for _ in range(2):
        status, body = await post(
            app_client,
            "/claim",
            bob_token,
            {"one_time_keys": {alice: {alice_dev: "signed_curve25519"}}},
        )
        assert body["one_time_keys"] == {alice: {alice_dev: fallback}}
    await expect_unused([])
    # Re-uploading the same fallback key keeps it used; a new one is unused again.
    await post(app_client, "/upload", alice_token, {"fallback_keys": fallback})
    await expect_unused([])
    new = {"signed_curve25519:FB2": {"key": "fb2", "fallback": True, "signatures": {}}}
    await post(app_client, "/upload", alice_token, {"fallback_keys": new})
    await expect_unused(["signed_curve25519"])
    status, body = await post(
        app_client,
        "/claim",
        bob_token,
        {"one_time_keys": {alice: {alice_dev: "signed_curve25519"}}},
    )
    assert body["one_time_keys"] == {alice: {alice_dev: new}}


async def test_remote_users_are_failures_without_federation(app_client: Any) -> None:
    from homeserver.appstate import E2EE_KEYS

    _, token, _ = await make_user(app_client, "alice")
    app_client.server.app[E2EE_KEYS]._remote = lambda: None  # no network in this test
    status, body = await post(
        app_client, "/query", token, {"device_keys": {"@carol:remote.example": []}}
    )
    assert status == 200
    assert body["device_keys"] == {}
    assert list(body["failures"]) == ["remote.example"]
    status, body = await post(
        app_client,
        "/claim",
        token,
        {"one_time_keys": {"@carol:remote.example": {"DEV": "signed_curve25519"}}},
    )
    assert body["one_time_keys"] == {}
    assert list(body["failures"]) == ["remote.example"]


async def test_bad_device_keys_are_rejected(app_client: Any) -> None:
    alice, token, dev = await make_user(app_client, "alice")
    signing = generate_signing_key("x")
    good = device_keys(alice, dev, signing)

    # A signature we cannot verify (missing or wrong) is stored as given, as Synapse
    # does: the server only keeps device keys, clients verify them.
    bob, bob_token, bob_dev = await make_user(app_client, "bob")
    bobs = device_keys(bob, bob_dev, signing)
    tampered = dict(bobs, algorithms=["m.megolm.v1.aes-sha2"])
    status, body = await post(app_client, "/upload", bob_token, {"device_keys": tampered})
    assert status == 200, body
    status, body = await post(app_client, "/query", token, {"device_keys": {bob: []}})
    assert body["device_keys"][bob][bob_dev]["algorithms"] == ["m.megolm.v1.aes-sha2"]
    assert body["device_keys"][bob][bob_dev]["signatures"] == bobs["signatures"]

    other = device_keys("@mallory:test.local", dev, signing)
    status, body = await post(app_client, "/upload", token, {"device_keys": other})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")

    wrong_device = device_keys(alice, "OTHERDEV", signing)
    status, body = await post(app_client, "/upload", token, {"device_keys": wrong_device})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")

    for bad in (
        {"device_keys": "nope"},
        {"device_keys": dict(good, keys=["a"])},
        {"device_keys": dict(good, algorithms="m.megolm.v1.aes-sha2")},
        {"one_time_keys": ["x"]},
        {"one_time_keys": {"no-colon": "k"}},
        {"one_time_keys": {"signed_curve25519:A": 5}},
        {"fallback_keys": {"signed_curve25519:A": {"key": True}}},
    ):
        status, body = await post(app_client, "/upload", token, bad)
        assert status == 400, bad
        assert body["errcode"] == "M_BAD_JSON", (bad, body)

    for path, bad in (
        ("/query", {"device_keys": {alice: "DEV"}}),
        ("/query", {"device_keys": []}),
        ("/query", {"device_keys": {alice: []}, "timeout": "soon"}),
        ("/claim", {"one_time_keys": {alice: {dev: 1}}}),
        ("/claim", {}),
    ):
        status, body = await post(app_client, path, token, bad)
        assert (status, body["errcode"]) == (400, "M_BAD_JSON"), (path, bad, body)

    # Nothing bad was stored.
    status, body = await post(app_client, "/query", token, {"device_keys": {alice: []}})
    assert body["device_keys"] == {alice: {}}


async def test_one_time_key_conflict(app_client: Any) -> None:
    _, token, _ = await make_user(app_client, "alice")
    status, _ = await post(app_client, "/upload", token, {"one_time_keys": {"curve25519:A": "k1"}})
    assert status == 200
    status, body = await post(
        app_client, "/upload", token, {"one_time_keys": {"curve25519:A": "k1"}}
    )
    assert body == {"one_time_key_counts": {"signed_curve25519": 0, "curve25519": 1}}
    status, body = await post(
        app_client, "/upload", token, {"one_time_keys": {"curve25519:A": "k2"}}
    )
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


async def test_cross_signing_and_signatures_visible_in_query(app_client: Any) -> None:
    alice, alice_token, alice_dev = await make_user(app_client, "alice")
    bob, bob_token, bob_dev = await make_user(app_client, "bob")
    alice_device_key = generate_signing_key("a")
    await post(
        app_client,
        "/upload",
        alice_token,
        {"device_keys": device_keys(alice, alice_dev, alice_device_key)},
    )

    master, ssk, usk = (generate_signing_key(n) for n in "msu")
    upload = {
        "master_key": cross_signing_key(alice, "master", master),
        "self_signing_key": cross_signing_key(alice, "self_signing", ssk, master),
        "user_signing_key": cross_signing_key(alice, "user_signing", usk, master),
    }
    status, body = await post(app_client, "/device_signing/upload", alice_token, upload)
    assert (status, body) == (200, {})
    # The same keys again: idempotent, no re-authentication needed.
    status, body = await post(app_client, "/device_signing/upload", alice_token, upload)
    assert (status, body) == (200, {})
    # Different keys now need UIA.
    other = {"master_key": cross_signing_key(alice, "master", generate_signing_key("z"))}
    status, body = await post(app_client, "/device_signing/upload", alice_token, other)
    assert status == 401
    assert body["flows"] == [{"stages": ["m.login.password"]}]

    # Bob's cross-signing keys, so Alice can sign his master key.
    bob_master = generate_signing_key("bm")
    status, _ = await post(
        app_client,
        "/device_signing/upload",
        bob_token,
        {"master_key": cross_signing_key(bob, "master", bob_master)},
    )
    assert status == 200

    # Alice signs her device with her self-signing key...
    stored_device = device_keys(alice, alice_dev, alice_device_key)
    ssk_public = encode_verify_key_base64(ssk.verify_key)
    ssk.version = ssk_public
    signed_device = sign_json(dict(stored_device), alice, ssk)
    # ...and Bob's master key with her user-signing key.
    usk_public = encode_verify_key_base64(usk.verify_key)
    usk.version = usk_public
    bob_master_obj = cross_signing_key(bob, "master", bob_master)
    bob_master_public = encode_verify_key_base64(bob_master.verify_key)
    signed_bob_master = sign_json(dict(bob_master_obj), alice, usk)
    bad_sig = dict(signed_device, signatures={alice: {f"ed25519:{ssk_public}": "AAAA"}})
    status, body = await post(
        app_client,
        "/signatures/upload",
        alice_token,
        {
            alice: {alice_dev: signed_device},
            bob: {bob_master_public: signed_bob_master},
        },
    )
    assert (status, body) == (200, {"failures": {}})
    status, body = await post(
        app_client, "/signatures/upload", alice_token, {alice: {alice_dev: bad_sig}}
    )
    assert body["failures"][alice][alice_dev]["errcode"] == "M_INVALID_SIGNATURE"

    # Bob sees Alice's self-signature on her device, her master and self-signing keys,
    # but not her user-signing key.
    status, body = await post(
        app_client, "/query", bob_token, {"device_keys": {alice: [], bob: []}}
    )
    device_sigs = body["device_keys"][alice][alice_dev]["signatures"][alice]
    assert (
        device_sigs[f"ed25519:{ssk_public}"]
        == signed_device["signatures"][alice][f"ed25519:{ssk_public}"]
    )
    assert (
        device_sigs[f"ed25519:{alice_dev}"]
        == stored_device["signatures"][alice][f"ed25519:{alice_dev}"]
    )
    assert body["master_keys"][alice] == upload["master_key"]
    assert body["self_signing_keys"][alice] == upload["self_signing_key"]
    assert body["user_signing_keys"] == {}
    # Alice's signature on Bob's master key is only visible to Alice.
    assert alice not in body["master_keys"][bob].get("signatures", {})

    status, body = await post(
        app_client, "/query", alice_token, {"device_keys": {alice: [], bob: []}}
    )
    assert body["user_signing_keys"] == {alice: upload["user_signing_key"]}
    assert body["master_keys"][bob]["signatures"][alice] == {
        f"ed25519:{usk_public}": signed_bob_master["signatures"][alice][f"ed25519:{usk_public}"]
    }


async def test_cross_signing_bad_input(app_client: Any) -> None:
    alice, token, _ = await make_user(app_client, "alice")
    master, ssk = generate_signing_key("m"), generate_signing_key("s")
    cases = [
        (
            {"self_signing_key": cross_signing_key(alice, "self_signing", ssk, master)},
            400,
            "M_MISSING_PARAM",
        ),
        (
            {"master_key": cross_signing_key("@bob:test.local", "master", master)},
            400,
            "M_INVALID_PARAM",
        ),
        ({"master_key": cross_signing_key(alice, "self_signing", master)}, 400, "M_INVALID_PARAM"),
        (
            {
                "master_key": cross_signing_key(alice, "master", master),
                "self_signing_key": cross_signing_key(alice, "self_signing", ssk),
            },
            400,
            "M_INVALID_SIGNATURE",
        ),
        ({"master_key": "x"}, 400, "M_BAD_JSON"),
        (
            {"master_key": dict(cross_signing_key(alice, "master", master), usage="master")},
            400,
            "M_BAD_JSON",
        ),
    ]
    for body, status, errcode in cases:
        got_status, got = await post(app_client, "/device_signing/upload", token, body)
        assert (got_status, got.get("errcode")) == (status, errcode), (body, got)
    status, body = await post(app_client, "/query", token, {"device_keys": {alice: []}})
    assert body["master_keys"] == {}


async def test_device_deleted_hook_drops_keys(app_client: Any) -> None:
    from homeserver.appstate import NOTIFIER, SESSIONS, STORES

    alice, alice_token, alice_dev = await make_user(app_client, "alice")
    _, bob_token, _ = await make_user(app_client, "bob")
    await post(
        app_client,
        "/upload",
        alice_token,
        {
            "device_keys": device_keys(alice, alice_dev, generate_signing_key("a")),
            "one_time_keys": {"curve25519:A": "k"},
        },
    )
    app = app_client.server.app
    before = app[NOTIFIER].current.device_lists
    await app[SESSIONS].run_device_hooks(alice, [alice_dev])
    assert app[NOTIFIER].current.device_lists > before
    # Even if a device with the same ID comes back, the old keys are gone.
    await app[STORES].accounts.upsert_device(alice, alice_dev)
    status, body = await post(app_client, "/query", bob_token, {"device_keys": {alice: []}})
    assert body["device_keys"] == {alice: {}}
    status, body = await post(
        app_client, "/claim", bob_token, {"one_time_keys": {alice: {alice_dev: "curve25519"}}}
    )
    assert body["one_time_keys"] == {}


async def test_a_new_user_signing_key_alone_does_not_change_others_device_lists(
    app_client: Any,
) -> None:
    """Issue 9: only the master and self-signing keys concern other users (Synapse)."""
    from tests.client.helpers import eventually, make_room, register_user

    alice = await register_user(app_client, "alice")
    a_token, a_id = alice["access_token"], alice["user_id"]
    bob, bob_token, _ = await make_user(app_client, "bob")
    room = await make_room(app_client, a_id)
    resp = await app_client.post(
        f"/_matrix/client/v3/join/{room}", json={}, headers=auth(bob_token)
    )
    assert resp.status == 200
    master, ssk = generate_signing_key("m"), generate_signing_key("s")
    first = {
        "master_key": cross_signing_key(a_id, "master", master),
        "self_signing_key": cross_signing_key(a_id, "self_signing", ssk, master),
    }
    assert (await post(app_client, "/device_signing/upload", a_token, first))[0] == 200

    async def bob_sync(since: str | None) -> dict[str, Any]:
        params = {"timeout": "0", **({"since": since} if since else {})}
        resp = await app_client.get(
            "/_matrix/client/v3/sync", params=params, headers=auth(bob_token)
        )
        return await resp.json()

    token = (await bob_sync(None))["next_batch"]
    usk = {
        "user_signing_key": cross_signing_key(
            a_id, "user_signing", generate_signing_key("u"), master
        )
    }
    status, challenge = await post(app_client, "/device_signing/upload", a_token, usk)
    assert status == 401
    usk["auth"] = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "correct horse",
        "session": challenge["session"],
    }
    assert (await post(app_client, "/device_signing/upload", a_token, usk))[0] == 200
    after = await bob_sync(token)
    assert a_id not in after.get("device_lists", {}).get("changed", [])

    # A new self-signing key does concern Bob.
    token = after["next_batch"]
    ssk2 = {
        "self_signing_key": cross_signing_key(
            a_id, "self_signing", generate_signing_key("t"), master
        )
    }
    status, challenge = await post(app_client, "/device_signing/upload", a_token, ssk2)
    ssk2["auth"] = {**usk["auth"], "session": challenge["session"]}
    assert (await post(app_client, "/device_signing/upload", a_token, ssk2))[0] == 200
    after = await eventually(
        app_client,
        lambda: bob_sync(token),
        lambda body: a_id in body.get("device_lists", {}).get("changed", []),
    )
    assert a_id in after.get("device_lists", {}).get("changed", [])
