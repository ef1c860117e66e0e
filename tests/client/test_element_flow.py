"""The requests Element Web makes at first login and when creating a room, in order,
with the bodies Element sends, each answer checked for the fields Element reads.

One test walks the whole flow (each step needs what the previous ones created); the
step comments name what Element does with the answer.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from nacl.signing import SigningKey
from signedjson.key import encode_verify_key_base64
from signedjson.sign import sign_json

from tests.client.helpers import auth, register_user

C = "/_matrix/client/v3"
PASSWORD = "element password"
DEVICE_NAME = "app.element.io: Firefox on Linux"

# Element's sync filter (matrix-js-sdk's default plus Element's lazy loading options).
ELEMENT_FILTER = {
    "room": {
        "state": {"lazy_load_members": True},
        "timeline": {"unread_thread_notifications": True},
    }
}


def _key(seed_byte: int, name: str) -> tuple[SigningKey, str]:
    key = SigningKey(bytes([seed_byte]) * 32)
    key.alg = "ed25519"  # type: ignore[attr-defined]
    public = encode_verify_key_base64(key.verify_key)
    key.version = public  # type: ignore[attr-defined]  # cross-signing key IDs are the key
    return key, public


async def _ok(response: Any, status: int = 200) -> Any:
    text = await response.text()
    assert response.status == status, f"{response.method} {response.url}: {text}"
    return json.loads(text)


async def test_first_login_and_room_creation(app_client: Any) -> None:
    c = app_client
    await register_user(c, "alice", PASSWORD)

    # 1. GET /versions: Element refuses servers without a v1.x it knows.
    versions = await _ok(await c.get("/_matrix/client/versions"))
    assert {"v1.1", "v1.5", "v1.12"} <= set(versions["versions"])
    assert isinstance(versions["unstable_features"], dict)
    assert all(isinstance(v, bool) for v in versions["unstable_features"].values())

    # 2. GET /login: the password form is shown when m.login.password is offered.
    flows = await _ok(await c.get(f"{C}/login"))
    assert {"type": "m.login.password"} in [
        {"type": f["type"]} for f in flows["flows"] if f["type"] == "m.login.password"
    ]

    # 3. POST /login as Element sends it.
    login = await _ok(
        await c.post(
            f"{C}/login",
            json={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "alice"},
                "password": PASSWORD,
                "initial_device_display_name": DEVICE_NAME,
            },
        )
    )
    user_id, device_id, token = login["user_id"], login["device_id"], login["access_token"]
    assert user_id == "@alice:test.local"
    assert device_id and token
    h = auth(token)
    u = quote(user_id)

    # 4. GET /pushrules/: the notification settings read the default rules.
    rules = await _ok(await c.get(f"{C}/pushrules/", headers=h))
    ruleset = rules["global"]
    assert set(ruleset) >= {"override", "content", "room", "sender", "underride"}
    override_ids = [r["rule_id"] for r in ruleset["override"]]
    assert override_ids[0] == ".m.rule.master"
    assert ".m.rule.suppress_notices" in override_ids
    assert any(r["rule_id"] == ".m.rule.message" for r in ruleset["underride"])
    assert all(r["default"] is True for r in ruleset["underride"])

    # 5. GET /capabilities: room versions for the upgrade UI, password change, profile.
    caps = (await _ok(await c.get(f"{C}/capabilities", headers=h)))["capabilities"]
    assert caps["m.room_versions"]["default"] in caps["m.room_versions"]["available"]
    assert caps["m.change_password"] == {"enabled": True}
    assert caps["m.set_displayname"] == {"enabled": True}

    # 6. POST /user/{userId}/filter: Element stores its sync filter, gets an ID.
    created_filter = await _ok(await c.post(f"{C}/user/{u}/filter", json=ELEMENT_FILTER, headers=h))
    filter_id = created_filter["filter_id"]
    assert isinstance(filter_id, str) and filter_id
    stored_filter = await _ok(await c.get(f"{C}/user/{u}/filter/{filter_id}", headers=h))
    assert stored_filter["room"]["state"]["lazy_load_members"] is True

    # 7. The first /sync with an inline filter, timeout=0.
    inline = json.dumps({"room": {"timeline": {"limit": 1}}})
    first = await _ok(
        await c.get(f"{C}/sync", params={"filter": inline, "timeout": "0"}, headers=h)
    )
    assert isinstance(first["next_batch"], str) and first["next_batch"]
    assert first.get("rooms", {}).get("join", {}) == {}
    since = first["next_batch"]
    # ... then with the filter ID, incrementally.
    second = await _ok(
        await c.get(
            f"{C}/sync", params={"filter": filter_id, "since": since, "timeout": "0"}, headers=h
        )
    )
    since = second["next_batch"]

    # 8. Account data: Element reads secret storage (absent) and writes its settings.
    missing = await c.get(f"{C}/user/{u}/account_data/m.secret_storage.default_key", headers=h)
    assert missing.status == 404
    assert (await missing.json())["errcode"] == "M_NOT_FOUND"
    settings = {"recent_emoji": [["👍", 1]], "FTUE.userOnboardingButton": False}
    await _ok(
        await c.put(f"{C}/user/{u}/account_data/im.vector.web.settings", json=settings, headers=h)
    )
    assert (
        await _ok(await c.get(f"{C}/user/{u}/account_data/im.vector.web.settings", headers=h))
        == settings
    )

    # 9. GET /profile/{userId}: the avatar menu shows the display name.
    profile = await _ok(await c.get(f"{C}/profile/{u}", headers=h))
    assert profile == {"displayname": "alice"}

    # 10. POST /keys/upload: the device's identity keys and one-time/fallback keys.
    device_key, device_public = _key(1, "device")
    device_key.version = device_id  # type: ignore[attr-defined]
    device_keys = sign_json(
        {
            "user_id": user_id,
            "device_id": device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                f"curve25519:{device_id}": "JGLn/yafz74HB2AbPLYJWIVGnKAtqECOBf11yyXac2Y",
                f"ed25519:{device_id}": device_public,
            },
        },
        user_id,
        device_key,
    )
    otks = {
        f"signed_curve25519:AAAAA{i}": sign_json(
            {"key": f"otk{i}key0000000000000000000000000000000000"}, user_id, device_key
        )
        for i in range(3)
    }
    fallback = {
        "signed_curve25519:AAAAFB": sign_json(
            {"key": "fallbackkey00000000000000000000000000000000", "fallback": True},
            user_id,
            device_key,
        )
    }
    uploaded = await _ok(
        await c.post(
            f"{C}/keys/upload",
            json={"device_keys": device_keys, "one_time_keys": otks, "fallback_keys": fallback},
            headers=h,
        )
    )
    assert uploaded == {"one_time_key_counts": {"signed_curve25519": 3}}

    # 11. POST /keys/device_signing/upload. The first upload needs no auth (the user
    # has no master key yet: MSC3967, spec v1.11); replacing the keys ("reset") needs
    # user-interactive auth with the password.
    def cross_signing(seed: int) -> tuple[dict[str, Any], SigningKey, str]:
        master, master_pub = _key(seed, "master")
        self_signing, ss_pub = _key(seed + 1, "self_signing")
        _, us_pub = _key(seed + 2, "user_signing")
        keys = {
            "master_key": sign_json(
                {
                    "user_id": user_id,
                    "usage": ["master"],
                    "keys": {f"ed25519:{master_pub}": master_pub},
                },
                user_id,
                device_key,
            ),
            "self_signing_key": sign_json(
                {
                    "user_id": user_id,
                    "usage": ["self_signing"],
                    "keys": {f"ed25519:{ss_pub}": ss_pub},
                },
                user_id,
                master,
            ),
            "user_signing_key": sign_json(
                {
                    "user_id": user_id,
                    "usage": ["user_signing"],
                    "keys": {f"ed25519:{us_pub}": us_pub},
                },
                user_id,
                master,
            ),
        }
        return keys, self_signing, ss_pub

    first_keys, _, _ = cross_signing(10)
    assert (
        await _ok(await c.post(f"{C}/keys/device_signing/upload", json=first_keys, headers=h)) == {}
    )
    cross, self_signing, ss_pub = cross_signing(20)
    challenge = await c.post(f"{C}/keys/device_signing/upload", json=cross, headers=h)
    uia = await _ok(challenge, 401)
    assert ["m.login.password"] in [f["stages"] for f in uia["flows"]]
    assert isinstance(uia["session"], str)
    await _ok(
        await c.post(
            f"{C}/keys/device_signing/upload",
            json={
                **cross,
                "auth": {
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": user_id},
                    "password": PASSWORD,
                    "session": uia["session"],
                },
            },
            headers=h,
        )
    )
    master_key, ss_key, us_key = (
        cross["master_key"],
        cross["self_signing_key"],
        cross["user_signing_key"],
    )

    # 12. POST /keys/signatures/upload: the self-signing key signs this device.
    unsigned_device = {k: v for k, v in device_keys.items() if k not in ("signatures", "unsigned")}
    device_signed = sign_json(unsigned_device, user_id, self_signing)
    signatures = await _ok(
        await c.post(
            f"{C}/keys/signatures/upload",
            json={user_id: {device_id: {**device_signed}}},
            headers=h,
        )
    )
    assert signatures == {"failures": {}}

    # 13. POST /keys/query for ourselves: the device and the cross-signing keys.
    queried = await _ok(
        await c.post(f"{C}/keys/query", json={"device_keys": {user_id: []}}, headers=h)
    )
    mine = queried["device_keys"][user_id][device_id]
    assert mine["keys"] == device_keys["keys"]
    assert f"ed25519:{ss_pub}" in mine["signatures"][user_id]
    assert f"ed25519:{device_id}" in mine["signatures"][user_id]
    assert queried["master_keys"][user_id]["keys"] == master_key["keys"]
    assert queried["self_signing_keys"][user_id]["keys"] == ss_key["keys"]
    assert queried["user_signing_keys"][user_id]["keys"] == us_key["keys"]
    assert queried.get("failures", {}) == {}

    # 14. GET /devices: the session list.
    devices = (await _ok(await c.get(f"{C}/devices", headers=h)))["devices"]
    this = [d for d in devices if d["device_id"] == device_id]
    assert len(this) == 1
    assert this[0]["display_name"] == DEVICE_NAME

    # 15. POST /createRoom as Element's "New room" dialog sends it (encrypted, private).
    room = await _ok(
        await c.post(
            f"{C}/createRoom",
            json={
                "name": "Planning",
                "preset": "private_chat",
                "visibility": "private",
                "initial_state": [
                    {
                        "type": "m.room.guest_access",
                        "state_key": "",
                        "content": {"guest_access": "can_join"},
                    },
                    {
                        "type": "m.room.encryption",
                        "state_key": "",
                        "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                    },
                ],
            },
            headers=h,
        )
    )
    room_id = room["room_id"]
    assert room_id.startswith("!")
    r = quote(room_id)
    encryption = await _ok(await c.get(f"{C}/rooms/{r}/state/m.room.encryption/", headers=h))
    assert encryption == {"algorithm": "m.megolm.v1.aes-sha2"}

    # The room appears in the next sync with its state and the encryption event.
    synced = await _ok(
        await c.get(
            f"{C}/sync", params={"filter": filter_id, "since": since, "timeout": "0"}, headers=h
        )
    )
    since = synced["next_batch"]
    joined = synced["rooms"]["join"][room_id]
    seen = joined["state"].get("events", []) + joined["timeline"]["events"]
    assert ("m.room.encryption", "") in {(e["type"], e.get("state_key")) for e in seen}
    assert ("m.room.name", "") in {(e["type"], e.get("state_key")) for e in seen}
    last_event_id = joined["timeline"]["events"][-1]["event_id"]

    # 16. GET /rooms/{id}/members (lazy-loading Element fetches the member list).
    members = await _ok(
        await c.get(f"{C}/rooms/{r}/members", params={"not_membership": "leave"}, headers=h)
    )
    assert [(m["state_key"], m["content"]["membership"]) for m in members["chunk"]] == [
        (user_id, "join")
    ]
    assert members["chunk"][0]["content"]["displayname"] == "alice"

    # 17. POST /receipt: Element sends a threaded-aware read receipt.
    await _ok(
        await c.post(
            f"{C}/rooms/{r}/receipt/m.read/{quote(last_event_id)}",
            json={"thread_id": "main"},
            headers=h,
        )
    )

    # 18. GET /messages: back-pagination from the end with a lazy-loading filter.
    messages = await _ok(
        await c.get(
            f"{C}/rooms/{r}/messages",
            params={"dir": "b", "limit": "20", "filter": json.dumps({"lazy_load_members": True})},
            headers=h,
        )
    )
    chunk_types = [e["type"] for e in messages["chunk"]]
    assert chunk_types[0] == joined["timeline"]["events"][-1]["type"]
    assert "m.room.create" in chunk_types
    assert isinstance(messages["start"], str)

    # 19. PUT /typing.
    await _ok(
        await c.put(f"{C}/rooms/{r}/typing/{u}", json={"typing": True, "timeout": 30000}, headers=h)
    )

    # 20. POST /read_markers: fully-read marker and read receipt together.
    await _ok(
        await c.post(
            f"{C}/rooms/{r}/read_markers",
            json={"m.fully_read": last_event_id, "m.read": last_event_id},
            headers=h,
        )
    )

    # 21. PUT /send with a transaction ID; a retry with the same ID is the same event.
    body = {"msgtype": "m.text", "body": "Hello!"}
    sent = await _ok(
        await c.put(f"{C}/rooms/{r}/send/m.room.message/m1700000000000.0", json=body, headers=h)
    )
    retry = await _ok(
        await c.put(f"{C}/rooms/{r}/send/m.room.message/m1700000000000.0", json=body, headers=h)
    )
    assert sent["event_id"] == retry["event_id"]

    # The next sync carries the message (once, with our transaction ID), the typing
    # notification, our receipt, and the fully-read marker.
    final = await _ok(
        await c.get(
            f"{C}/sync", params={"filter": filter_id, "since": since, "timeout": "0"}, headers=h
        )
    )
    room_sync = final["rooms"]["join"][room_id]
    timeline = [e for e in room_sync["timeline"]["events"] if e["type"] == "m.room.message"]
    assert [(e["event_id"], e["content"], e["sender"]) for e in timeline] == [
        (sent["event_id"], body, user_id)
    ]
    assert timeline[0]["unsigned"]["transaction_id"] == "m1700000000000.0"
    ephemeral = {e["type"]: e["content"] for e in room_sync["ephemeral"]["events"]}
    assert ephemeral["m.typing"] == {"user_ids": [user_id]}
    receipts = ephemeral["m.receipt"]
    assert user_id in receipts[last_event_id]["m.read"]
    room_data = {e["type"]: e["content"] for e in room_sync["account_data"]["events"]}
    assert room_data["m.fully_read"] == {"event_id": last_event_id}
