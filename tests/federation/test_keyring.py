"""Keyring: fetching, validating, caching and rate limiting remote server keys."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from signedjson.key import generate_signing_key, get_verify_key
from signedjson.sign import sign_json

from federation.keyring import (
    InvalidSignature,
    KeyNotFound,
    Keyring,
    MemoryKeyStore,
    TrustedKeyServer,
    parse_key_document,
)
from homeserver.events.redaction import redact
from homeserver.events.room_versions import get_room_version

CAPTURES = Path("/work/shared/interop/captures")
NOW = 1_700_000_000_000
DAY = 86_400_000


def b64(vk) -> str:
    import base64

    return base64.b64encode(bytes(vk)).decode().rstrip("=")


def key_doc(server: str, key, valid_until: int, old: dict | None = None, signers=None) -> dict:
    doc = {
        "server_name": server,
        "valid_until_ts": valid_until,
        "verify_keys": {f"ed25519:{key.version}": {"key": b64(get_verify_key(key))}},
        "old_verify_keys": old or {},
    }
    for signer in signers or [key]:
        sign_json(doc, server, signer)
    return doc


class Clock:
    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class FakeHttp:
    """Answers /_matrix/key/v2/server and /query from dicts, counting calls."""

    def __init__(self) -> None:
        self.server_docs: dict[str, Any] = {}
        self.notary_answers: dict[str, Any] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.delay = 0.0

    async def get_json(self, destination, path, *, query=None, timeout=None):
        self.calls.append(("GET", destination, path))
        await asyncio.sleep(self.delay)
        doc = self.server_docs.get(destination)
        if doc is None or isinstance(doc, Exception):
            raise doc or ConnectionError(f"cannot reach {destination}")
        return copy.deepcopy(doc)

    async def post_json(self, destination, path, json_body, *, query=None, timeout=None):
        self.calls.append(("POST", destination, path))
        assert path == "/_matrix/key/v2/query"
        assert list(json_body["server_keys"]) == [list(json_body["server_keys"])[0]]
        ans = self.notary_answers.get(destination)
        if ans is None:
            raise ConnectionError("notary down")
        return copy.deepcopy(ans)


@pytest.fixture
def env():
    http = FakeHttp()
    store = MemoryKeyStore()
    clock = Clock()
    key = generate_signing_key("k1")
    http.server_docs["remote.example"] = key_doc("remote.example", key, NOW + DAY)
    kr = Keyring(store, http, "us.example", [], clock)
    return kr, http, store, clock, key


async def test_fetch_cache_and_store(env) -> None:
    kr, http, store, clock, key = env
    vk = await kr.get_verify_key("remote.example", "ed25519:k1", NOW)
    assert bytes(vk) == bytes(get_verify_key(key))
    assert http.calls == [("GET", "remote.example", "/_matrix/key/v2/server")]
    assert store.keys["remote.example"]["ed25519:k1"] == (b64(vk), NOW + DAY, None)
    assert store.fetched_ts["remote.example"] == NOW
    await kr.get_verify_key("remote.example", "ed25519:k1", NOW + 1000)
    assert len(http.calls) == 1
    # A fresh keyring on the same store answers without the network.
    kr2 = Keyring(store, http, "us.example", [], clock)
    vk2 = await kr2.get_verify_key("remote.example", "ed25519:k1", NOW)
    assert bytes(vk2) == bytes(vk) and len(http.calls) == 1


async def test_expired_current_key_refetches_and_fails_if_not_extended(env) -> None:
    kr, http, _, clock, _ = env
    await kr.get_verify_key("remote.example", "ed25519:k1", NOW)
    # at_ts past valid_until_ts: must refetch; the server still says NOW + DAY.
    clock.now = NOW + 2 * DAY
    with pytest.raises(KeyNotFound, match="not valid"):
        await kr.get_verify_key("remote.example", "ed25519:k1", NOW + 2 * DAY)
    assert len(http.calls) == 2
    # No at_ts (room versions 1-4): any known key is fine, no fetch.
    assert await kr.get_verify_key("remote.example", "ed25519:k1", None)
    assert len(http.calls) == 2


async def test_expired_key_refetch_extends_validity(env) -> None:
    kr, http, store, clock, key = env
    await kr.get_verify_key("remote.example", "ed25519:k1", NOW)
    clock.now = NOW + 2 * DAY
    http.server_docs["remote.example"] = key_doc("remote.example", key, NOW + 3 * DAY)
    await kr.get_verify_key("remote.example", "ed25519:k1", NOW + 2 * DAY)
    assert store.keys["remote.example"]["ed25519:k1"][1] == NOW + 3 * DAY


async def test_old_verify_keys_honour_expired_ts(env) -> None:
    kr, http, _, _, _ = env
    old_key = generate_signing_key("old")
    new_key = generate_signing_key("new")
    old = {"ed25519:old": {"key": b64(get_verify_key(old_key)), "expired_ts": NOW - 1000}}
    http.server_docs["rot.example"] = key_doc("rot.example", new_key, NOW + DAY, old)
    vk = await kr.get_verify_key("rot.example", "ed25519:old", NOW - 5000)
    assert bytes(vk) == bytes(get_verify_key(old_key))
    assert await kr.get_verify_key("rot.example", "ed25519:old", None)
    with pytest.raises(KeyNotFound):
        await kr.get_verify_key("rot.example", "ed25519:old", NOW - 1000)
    assert len(http.calls) <= 2


async def test_negative_cache_limits_refetch_to_once_a_minute(env) -> None:
    kr, http, _, clock, _ = env
    with pytest.raises(KeyNotFound):
        await kr.get_verify_key("remote.example", "ed25519:nope", NOW)
    for _ in range(5):
        with pytest.raises(KeyNotFound):
            await kr.get_verify_key("remote.example", "ed25519:nope", NOW)
    assert len(http.calls) == 1
    clock.now += 59_000
    with pytest.raises(KeyNotFound):
        await kr.get_verify_key("remote.example", "ed25519:nope", NOW)
    assert len(http.calls) == 1
    clock.now += 2_000
    with pytest.raises(KeyNotFound):
        await kr.get_verify_key("remote.example", "ed25519:nope", NOW)
    assert len(http.calls) == 2
    # Unreachable servers are rate limited too.
    with pytest.raises(KeyNotFound):
        await kr.get_verify_key("down.example", "ed25519:x", None)
    with pytest.raises(KeyNotFound):
        await kr.get_verify_key("down.example", "ed25519:x", None)
    assert [c[1] for c in http.calls].count("down.example") == 1


async def test_concurrent_lookups_share_one_fetch(env) -> None:
    kr, http, _, _, key = env
    http.delay = 0.05
    results = await asyncio.gather(
        *(kr.get_verify_key("remote.example", "ed25519:k1", NOW) for _ in range(10))
    )
    assert len(http.calls) == 1
    assert {bytes(r) for r in results} == {bytes(get_verify_key(key))}


async def test_concurrent_misses_all_fail_with_one_fetch(env) -> None:
    kr, http, _, _, _ = env
    http.delay = 0.02
    results = await asyncio.gather(
        *(kr.get_verify_key("remote.example", "ed25519:zz", NOW) for _ in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, KeyNotFound) for r in results)
    assert len(http.calls) == 1


@pytest.mark.parametrize("problem", ["wrong_server", "bad_sig", "unsigned", "no_valid_until"])
async def test_invalid_documents_are_rejected(env, problem: str) -> None:
    kr, http, store, _, key = env
    doc = key_doc("remote.example", key, NOW + DAY)
    if problem == "wrong_server":
        doc = key_doc("other.example", key, NOW + DAY)
    elif problem == "bad_sig":
        doc["valid_until_ts"] += 1  # signature no longer covers the content
    elif problem == "unsigned":
        doc.pop("signatures")
    else:
        doc.pop("valid_until_ts")
        sign_json(doc, "remote.example", key)
    http.server_docs["remote.example"] = doc
    with pytest.raises(KeyNotFound):
        await kr.get_verify_key("remote.example", "ed25519:k1", NOW)
    assert store.keys == {}


def test_document_signed_by_only_one_of_two_keys_is_rejected() -> None:
    k1, k2 = generate_signing_key("a"), generate_signing_key("b")
    doc = {
        "server_name": "s.example",
        "valid_until_ts": NOW,
        "verify_keys": {
            "ed25519:a": {"key": b64(get_verify_key(k1))},
            "ed25519:b": {"key": b64(get_verify_key(k2))},
        },
    }
    sign_json(doc, "s.example", k1)
    with pytest.raises(ValueError, match="self-signed by ed25519:b"):
        parse_key_document(doc, "s.example")
    sign_json(doc, "s.example", k2)
    assert set(parse_key_document(doc, "s.example")) == {"ed25519:a", "ed25519:b"}


def test_captured_synapse_key_documents_parse() -> None:
    for path in (CAPTURES / "server_keys.json", CAPTURES / "by-room-version/server_keys.json"):
        for server, doc in json.loads(path.read_text()).items():
            keys = parse_key_document(doc, server)
            assert list(keys) == list(doc["verify_keys"])
            assert all(k.valid_until_ts == doc["valid_until_ts"] for k in keys.values())
            with pytest.raises(ValueError):
                parse_key_document(doc, "someone.else")
    captured = json.loads((CAPTURES / "key_v2_server.json").read_text())
    assert parse_key_document(captured["response_body"], captured["to"])


async def test_notary_fallback_requires_notary_signature() -> None:
    http, store, clock = FakeHttp(), MemoryKeyStore(), Clock()
    notary_key = generate_signing_key("n1")
    origin_key = generate_signing_key("o1")
    doc = key_doc("origin.example", origin_key, NOW + DAY)
    notarised = sign_json(copy.deepcopy(doc), "notary.example", notary_key)
    http.notary_answers["notary.example"] = {"server_keys": [notarised]}
    trusted = [
        {
            "server_name": "notary.example",
            "verify_keys": {"ed25519:n1": b64(get_verify_key(notary_key))},
        }
    ]
    kr = Keyring(store, http, "us.example", trusted, clock)
    vk = await kr.get_verify_key("origin.example", "ed25519:o1", NOW)
    assert bytes(vk) == bytes(get_verify_key(origin_key))
    assert [c[:2] for c in http.calls] == [("GET", "origin.example"), ("POST", "notary.example")]

    # Same answer signed by a key the config does not list: rejected.
    rogue = generate_signing_key("n1")
    http.notary_answers["notary.example"] = {
        "server_keys": [sign_json(copy.deepcopy(doc), "notary.example", rogue)]
    }
    kr2 = Keyring(
        MemoryKeyStore(), http, "us.example", [TrustedKeyServer.from_config(trusted[0])], clock
    )
    with pytest.raises(KeyNotFound):
        await kr2.get_verify_key("origin.example", "ed25519:o1", NOW)

    # Notary-signed but origin's self-signature broken: rejected.
    forged = copy.deepcopy(doc)
    forged["verify_keys"]["ed25519:o1"]["key"] = b64(get_verify_key(generate_signing_key("x")))
    forged = sign_json(forged, "notary.example", notary_key)
    http.notary_answers["notary.example"] = {"server_keys": [forged]}
    kr3 = Keyring(MemoryKeyStore(), http, "us.example", trusted, clock)
    with pytest.raises(KeyNotFound):
        await kr3.get_verify_key("origin.example", "ed25519:o1", NOW)


async def test_verify_json_for_server(env) -> None:
    kr, http, _, _, key = env
    obj = sign_json({"type": "m.room.message", "content": {"body": "hi"}}, "remote.example", key)
    await kr.verify_json_for_server("remote.example", obj, NOW)
    tampered = {**obj, "content": {"body": "bye"}}
    with pytest.raises(InvalidSignature):
        await kr.verify_json_for_server("remote.example", tampered, NOW)
    with pytest.raises(InvalidSignature):
        await kr.verify_json_for_server("nobody.example", obj, NOW)
    # Signed only with a key the server never published.
    stranger = generate_signing_key("zz")
    obj2 = sign_json({"a": 1}, "remote.example", stranger)
    with pytest.raises(KeyNotFound):
        await kr.verify_json_for_server("remote.example", obj2, NOW)


async def test_verify_captured_pdus_with_captured_keys() -> None:
    """Synapse-signed PDUs verify through the keyring fed by the captured key documents."""
    docs = json.loads((CAPTURES / "server_keys.json").read_text())
    http = FakeHttp()
    http.server_docs.update(docs)
    kr = Keyring(MemoryKeyStore(), http, "us.example", [], Clock())
    pdu = json.loads((CAPTURES / "send_transaction_pdu.json").read_text())["request_body"]["pdus"][
        0
    ]
    origin = next(iter(pdu["signatures"]))
    # Signatures cover the redacted event (captures are room version 12).
    redacted = redact(pdu, get_room_version("12"))
    assert redacted["content"] == {}
    await kr.verify_json_for_server(origin, redacted, pdu["origin_server_ts"])
    redacted["depth"] += 1
    with pytest.raises(InvalidSignature):
        await kr.verify_json_for_server(origin, redacted, pdu["origin_server_ts"])


async def test_local_keys_need_no_io() -> None:
    key = generate_signing_key("me")
    http = FakeHttp()
    kr = Keyring(
        MemoryKeyStore(),
        http,
        "us.example",
        [],
        Clock(),
        local_keys={"ed25519:me": get_verify_key(key)},
    )
    assert bytes(await kr.get_verify_key("us.example", "ed25519:me", NOW)) == bytes(
        get_verify_key(key)
    )
    with pytest.raises(KeyNotFound):
        await kr.get_verify_key("us.example", "ed25519:other", NOW)
    assert http.calls == []


async def test_a_rotated_key_is_fetched_within_seconds_not_a_minute(env) -> None:
    """Issue 8.9: a key ID we have never seen is refetched 5 s after the last fetch
    (a server rotated its key); a key ID already looked for waits the full minute."""
    kr, http, _, clock, _ = env
    await kr.get_verify_key("remote.example", "ed25519:k1", NOW)
    rotated = generate_signing_key("k2")
    http.server_docs["remote.example"] = key_doc("remote.example", rotated, NOW + DAY)
    clock.now += 6_000
    vk = await kr.get_verify_key("remote.example", "ed25519:k2", NOW + 6_000)
    assert bytes(vk) == bytes(get_verify_key(rotated))
    assert len(http.calls) == 2
    # A made-up key ID: one fetch, then it is no longer new.
    clock.now += 6_000
    with pytest.raises(KeyNotFound):
        await kr.get_verify_key("remote.example", "ed25519:bogus", None)
    clock.now += 6_000
    with pytest.raises(KeyNotFound):
        await kr.get_verify_key("remote.example", "ed25519:bogus", None)
    assert len(http.calls) == 3


async def test_key_fetches_are_bounded_in_concurrency(env) -> None:
    """Issue 8.9: 300 made-up servers looked up at once never have more than
    MAX_CONCURRENT_FETCHES fetches in flight."""
    from federation.keyring import MAX_CONCURRENT_FETCHES

    kr, http, _, _, _ = env
    in_flight = peak = 0
    original = http.get_json

    async def counting(destination, path, **kw):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.01)
            return await original(destination, path, **kw)
        finally:
            in_flight -= 1

    http.get_json = counting
    names = [f"made-up-{i}.example" for i in range(300)]
    results = await asyncio.gather(
        *(kr.get_verify_key(n, "ed25519:x", None) for n in names), return_exceptions=True
    )
    assert all(isinstance(r, KeyNotFound) for r in results)
    assert len(http.calls) == 300
    assert 1 < peak <= MAX_CONCURRENT_FETCHES


def test_per_server_state_is_bounded() -> None:
    from federation.keyring import MAX_TRACKED_SERVERS

    kr = Keyring(MemoryKeyStore(), FakeHttp(), "us.example", [], Clock())
    for i in range(MAX_TRACKED_SERVERS + 500):
        kr._last_fetch.set(f"s{i}.example", NOW)
        kr._missing.set((f"s{i}.example", "ed25519:x"), NOW)
    assert len(kr._last_fetch) == MAX_TRACKED_SERVERS
    assert len(kr._missing) == MAX_TRACKED_SERVERS


async def test_origins_current_keys_beat_a_longer_lived_cached_copy(env) -> None:
    """What we answer as a notary follows the origin's newest answer, even when an
    older copy claimed a longer validity (a rotated key must not be hidden)."""
    kr, http, _, clock, key = env
    kr._remember_document("remote.example", key_doc("remote.example", key, NOW + 30 * DAY))
    rotated = generate_signing_key("k9")
    http.server_docs["remote.example"] = key_doc("remote.example", rotated, NOW + DAY)
    await kr.get_verify_key("remote.example", "ed25519:k9", NOW)
    (doc,) = await kr.documents_for_notary("remote.example", [], 0, may_fetch=False)
    assert set(doc["verify_keys"]) == {"ed25519:k9"}
