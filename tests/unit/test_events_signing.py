"""Signing and verification against the spec's test vectors (appendices: "Cryptographic
test vectors"), key helpers, and who must sign an event."""

from __future__ import annotations

import copy

import pytest

from homeserver.events import Event, get_room_version
from homeserver.events.hashing import add_content_hash, check_content_hash
from homeserver.events.redaction import redact
from homeserver.events.signing import (
    SignatureError,
    decode_verify_key_base64,
    encode_verify_key_base64,
    generate_signing_key,
    get_verify_key,
    key_id_of,
    read_signing_keys,
    required_signers,
    sign_event,
    sign_json_object,
    signing_key_from_seed,
    verify_event_signature,
    verify_event_signatures,
    verify_json_signature,
    write_signing_keys,
)

SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
V1 = get_room_version("1")


@pytest.fixture
def key():
    return signing_key_from_seed(SEED, "1")


# --- appendices: JSON signing --------------------------------------------------------


def test_spec_vector_sign_empty_object(key) -> None:
    assert sign_json_object({}, "domain", key) == {
        "signatures": {
            "domain": {
                "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
            }
        }
    }


def test_spec_vector_sign_object_with_data(key) -> None:
    assert sign_json_object({"one": 1, "two": "Two"}, "domain", key) == {
        "one": 1,
        "signatures": {
            "domain": {
                "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
            }
        },
        "two": "Two",
    }


def test_sign_json_keeps_other_signatures_and_ignores_unsigned(key) -> None:
    obj = {
        "one": 1,
        "two": "Two",
        "unsigned": {"x": 1},
        "signatures": {"other": {"ed25519:z": "sig"}},
    }
    sign_json_object(obj, "domain", key)
    assert obj["signatures"]["other"] == {"ed25519:z": "sig"}
    assert obj["signatures"]["domain"]["ed25519:1"].startswith("KqmLSbO39/")
    assert obj["unsigned"] == {"x": 1}


def test_verify_json_signature(key) -> None:
    vk = get_verify_key(key)
    obj = sign_json_object({"one": 1, "two": "Two"}, "domain", key)
    assert verify_json_signature(obj, "domain", vk)
    assert verify_json_signature(dict(obj, unsigned={"age": 5}), "domain", vk)
    assert not verify_json_signature(dict(obj, one=2), "domain", vk)
    assert not verify_json_signature(obj, "other", vk)
    assert not verify_json_signature({"one": 1}, "domain", vk)
    other = get_verify_key(generate_signing_key("1"))
    assert not verify_json_signature(obj, "domain", other)


# --- appendices: event signing -------------------------------------------------------


def _minimal_event() -> dict:
    return {
        "room_id": "!x:domain",
        "sender": "@a:domain",
        "origin": "domain",
        "origin_server_ts": 1000000,
        "signatures": {},
        "hashes": {},
        "type": "X",
        "content": {},
        "prev_events": [],
        "auth_events": [],
        "depth": 3,
        "unsigned": {"age_ts": 1000000},
    }


def _redactable_event() -> dict:
    return {
        "content": {"body": "Here is the message content"},
        "event_id": "$0:domain",
        "origin": "domain",
        "origin_server_ts": 1000000,
        "type": "m.room.message",
        "room_id": "!r:domain",
        "sender": "@u:domain",
        "signatures": {},
        "unsigned": {"age_ts": 1000000},
    }


def test_spec_vector_minimal_event(key) -> None:
    pdu = _minimal_event()
    add_content_hash(pdu)
    sign_event(pdu, V1, "domain", key)
    assert pdu == {
        "auth_events": [],
        "content": {},
        "depth": 3,
        "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
        "origin": "domain",
        "origin_server_ts": 1000000,
        "prev_events": [],
        "room_id": "!x:domain",
        "sender": "@a:domain",
        "signatures": {
            "domain": {
                "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
            }
        },
        "type": "X",
        "unsigned": {"age_ts": 1000000},
    }
    assert verify_event_signature(pdu, V1, "domain", get_verify_key(key))


def test_spec_vector_redactable_event(key) -> None:
    pdu = _redactable_event()
    add_content_hash(pdu)
    sign_event(pdu, V1, "domain", key)
    assert pdu == {
        "content": {"body": "Here is the message content"},
        "event_id": "$0:domain",
        "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
        "origin": "domain",
        "origin_server_ts": 1000000,
        "type": "m.room.message",
        "room_id": "!r:domain",
        "sender": "@u:domain",
        "signatures": {
            "domain": {
                "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
            }
        },
        "unsigned": {"age_ts": 1000000},
    }
    # The signature covers exactly the redacted form: the message body is stripped...
    redacted = redact(pdu, V1)
    assert redacted == {
        "content": {},
        "event_id": "$0:domain",
        "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
        "origin": "domain",
        "origin_server_ts": 1000000,
        "type": "m.room.message",
        "room_id": "!r:domain",
        "sender": "@u:domain",
        "signatures": pdu["signatures"],
    }
    vk = get_verify_key(key)
    # ... so the redacted copy verifies, and a changed body is caught by the hash only.
    assert verify_event_signature(redacted, V1, "domain", vk)
    assert not check_content_hash(redacted)
    changed = copy.deepcopy(pdu)
    changed["content"]["body"] = "something else"
    assert verify_event_signature(changed, V1, "domain", vk)
    assert not check_content_hash(changed)
    changed["origin_server_ts"] += 1
    assert not verify_event_signature(changed, V1, "domain", vk)


def test_sign_event_adds_to_existing_signatures(key) -> None:
    pdu = _redactable_event()
    add_content_hash(pdu)
    sign_event(pdu, V1, "domain", key)
    other = generate_signing_key("abc")
    sign_event(pdu, V1, "other.example", other)
    assert set(pdu["signatures"]) == {"domain", "other.example"}
    assert set(pdu["signatures"]["other.example"]) == {"ed25519:abc"}
    assert verify_event_signature(pdu, V1, "domain", get_verify_key(key))
    assert verify_event_signature(pdu, V1, "other.example", get_verify_key(other))
    assert not verify_event_signature(pdu, V1, "other.example", get_verify_key(key))
    assert not verify_event_signature(pdu, V1, "nobody", get_verify_key(key))
    vk = get_verify_key(key)
    for malformed in ({"domain": "sig"}, {"domain": {"ed25519:1": 5}}, "x", None):
        assert not verify_event_signature(dict(pdu, signatures=malformed), V1, "domain", vk)


# --- keys ----------------------------------------------------------------------------


def test_key_helpers_round_trip(key) -> None:
    vk = get_verify_key(key)
    assert key_id_of(key) == key_id_of(vk) == "ed25519:1"
    b64 = encode_verify_key_base64(vk)
    assert len(b64) == 43 and not b64.endswith("=")
    decoded = decode_verify_key_base64("ed25519:1", b64)
    assert decoded.encode() == vk.encode() and key_id_of(decoded) == "ed25519:1"
    with pytest.raises(ValueError, match="unsupported"):
        decode_verify_key_base64("curve25519:1", b64)
    with pytest.raises(ValueError, match="malformed"):
        decode_verify_key_base64("ed25519", b64)
    with pytest.raises(ValueError, match="malformed"):
        decode_verify_key_base64("ed25519:1", "abc")


def test_signing_key_file_format(key) -> None:
    text = write_signing_keys([key])
    # The spec's seed has non-zero padding bits; the canonical encoding ends in "0".
    assert text == f"ed25519 1 {SEED[:-1]}0\n"
    fresh = generate_signing_key("a_XyZ1")
    both = read_signing_keys(text + "\n" + write_signing_keys([fresh]))
    assert [k.version for k in both] == ["1", "a_XyZ1"]
    assert [k.encode() for k in both] == [key.encode(), fresh.encode()]
    with pytest.raises(ValueError, match="line 1"):
        read_signing_keys("ed25519 1\n")
    with pytest.raises(ValueError, match="unsupported"):
        read_signing_keys(f"rsa 1 {SEED}\n")


# --- who must sign -------------------------------------------------------------------


def _event(rv: str, **fields) -> Event:
    pdu = {
        "type": "m.room.message",
        "sender": "@u:a.example",
        "room_id": "!r:a.example",
        "content": {},
        "depth": 1,
        "origin_server_ts": 1,
        "prev_events": [],
        "auth_events": [],
    }
    pdu.update(fields)
    room_version = get_room_version(rv)
    if room_version.event_id_in_event:
        pdu.setdefault("event_id", "$x:a.example")
    return Event(pdu, room_version)


def test_required_signers_sender_server() -> None:
    assert required_signers(_event("10")) == {"a.example"}
    assert required_signers(_event("1")) == {"a.example"}


def test_required_signers_v1_v2_event_id_server() -> None:
    assert required_signers(_event("1", event_id="$x:b.example")) == {"a.example", "b.example"}
    assert required_signers(_event("2", event_id="$x:b.example:8448")) == {
        "a.example",
        "b.example:8448",
    }


def test_required_signers_restricted_join() -> None:
    content = {"membership": "join", "join_authorised_via_users_server": "@admin:c.example"}
    member = {"type": "m.room.member", "state_key": "@u:a.example", "content": content}
    assert required_signers(_event("8", **member)) == {"a.example", "c.example"}
    assert required_signers(_event("12", **member)) == {"a.example", "c.example"}
    # Before v8 the key means nothing; and only joins are authorised this way.
    assert required_signers(_event("7", **member)) == {"a.example"}
    leave = dict(member, content=dict(content, membership="leave"))
    assert required_signers(_event("9", **leave)) == {"a.example"}


def test_required_signers_third_party_invite_join_is_sender_only() -> None:
    content = {"membership": "invite", "third_party_invite": {"signed": {"mxid": "@u:a"}}}
    member = {"type": "m.room.member", "state_key": "@v:b.example", "content": content}
    assert required_signers(_event("10", **member)) == {"a.example"}


def test_verify_event_signatures(key) -> None:
    event = _event("10")
    add_content_hash(event.pdu)
    sign_event(event.pdu, event.room_version, "a.example", key)
    vk = get_verify_key(key)
    verify_event_signatures(event, {"a.example": {"ed25519:1": vk}})
    # Unknown keys are skipped, but at least one known key must have signed.
    event.pdu["signatures"]["a.example"]["ed25519:unknown"] = "garbage"
    verify_event_signatures(event, {"a.example": {"ed25519:1": vk}})
    with pytest.raises(SignatureError, match="no signature by a known key of a.example"):
        verify_event_signatures(event, {"a.example": {}})
    with pytest.raises(SignatureError, match="invalid signature by a.example"):
        verify_event_signatures(event, {"a.example": {"ed25519:unknown": vk}})
    del event.pdu["signatures"]["a.example"]
    with pytest.raises(SignatureError, match="not signed by a.example"):
        verify_event_signatures(event, {"a.example": {"ed25519:1": vk}})
