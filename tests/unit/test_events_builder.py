"""build_event: complete signed PDUs in each room version's layout, which our own
validation, hashing and signature checks accept."""

from __future__ import annotations

import re
from typing import Any

import pytest

from homeserver.events import Event, get_room_version
from homeserver.events.builder import build_event, edge_hash
from homeserver.events.hashing import check_content_hash, compute_event_id
from homeserver.events.signing import (
    get_verify_key,
    signing_key_from_seed,
    verify_event_signatures,
)
from homeserver.events.validation import EventFormatError, validate_pdu_format

KEY = signing_key_from_seed("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1", "1")
KEYS = {"example.org": {"ed25519:1": get_verify_key(KEY)}}
V4_ID = "$pT8mnnc41U4NwVGlvaTZH88r6_vA94W2QRQfIOS3KOI"
V3_ID = "$3t0O7fO2DfV8Azi/na2lKa4lyyhBnw8ze6rC9T/HToY"


def build(version: str, **overrides: Any) -> Event:
    rv = get_room_version(version)
    if rv.event_id_in_event:
        edge = "$prev:example.org"
    else:
        edge = V3_ID if version == "3" else V4_ID
    args: dict[str, Any] = {
        "room_id": "!tNtttfrYyVP9rZuAQiNP0oITXIYeXaIm65Nb5yu6LZs"
        if rv.room_id_is_create_event_id
        else "!room:example.org",
        "sender": "@alice:example.org",
        "type": "m.room.message",
        "content": {"msgtype": "m.text", "body": "hello"},
        "prev_event_ids": [edge],
        "auth_event_ids": [edge],
        "depth": 4,
        "origin_server_ts": 1700000000000,
        "server_name": "example.org",
        "signing_key": KEY,
    }
    args.update(overrides)
    return build_event(rv, **args)


@pytest.mark.parametrize("version", [str(v) for v in range(1, 13)])
def test_built_event_is_valid_hashed_and_signed(version: str) -> None:
    event = build(version)
    rv = event.room_version
    validate_pdu_format(event.pdu, rv)
    assert check_content_hash(event.pdu)
    verify_event_signatures(event, KEYS)
    assert event.event_id == compute_event_id(event.pdu, rv)
    assert set(event.pdu) >= {"type", "sender", "room_id", "content", "depth", "hashes"}
    assert "origin" not in event.pdu  # like Synapse: `origin` is not sent any more
    assert event.pdu["signatures"] == {
        "example.org": {"ed25519:1": event.pdu["signatures"]["example.org"]["ed25519:1"]}
    }


def test_v1_layout() -> None:
    event = build(
        "1",
        prev_event_ids=["$prev:example.org"],
        auth_event_ids=["$a1:example.org", "$a2:other.org"],
        edge_hashes={"$prev:example.org": "HASHPREV", "$a2:other.org": "HASHA2"},
    )
    assert re.fullmatch(r"\$[A-Za-z0-9_\-]+:example\.org", event.pdu["event_id"])
    assert event.event_id == event.pdu["event_id"]
    assert event.pdu["prev_events"] == [["$prev:example.org", {"sha256": "HASHPREV"}]]
    assert event.pdu["auth_events"] == [
        ["$a1:example.org", {}],
        ["$a2:other.org", {"sha256": "HASHA2"}],
    ]
    assert event.prev_event_ids == ["$prev:example.org"]
    assert event.auth_event_ids == ["$a1:example.org", "$a2:other.org"]
    # Random IDs: two otherwise identical events get different IDs.
    assert build("1").event_id != build("1").event_id


def test_v1_edge_hash_is_the_reference_hash_of_the_cited_event() -> None:
    parent = build("2")
    child = build(
        "2",
        prev_event_ids=[parent.event_id],
        edge_hashes={parent.event_id: edge_hash(parent)},
    )
    cited_id, hashes = child.pdu["prev_events"][0]
    assert cited_id == parent.event_id
    assert len(hashes["sha256"]) == 43
    assert hashes["sha256"] == edge_hash(
        Event(dict(parent.pdu, unsigned={"x": 1}), parent.room_version)
    )


@pytest.mark.parametrize(
    ("version", "pattern"), [("3", r"\$[A-Za-z0-9+/]{43}"), ("4", r"\$[A-Za-z0-9_\-]{43}")]
)
def test_v3_v4_layout(version: str, pattern: str) -> None:
    event = build(version)
    assert "event_id" not in event.pdu
    assert re.fullmatch(pattern, event.event_id)
    assert all(isinstance(e, str) for e in event.pdu["prev_events"] + event.pdu["auth_events"])


def test_state_event_and_unsigned() -> None:
    event = build(
        "10", type="m.room.topic", state_key="", content={"topic": "t"}, unsigned={"age": 3}
    )
    assert event.pdu["state_key"] == "" and event.state_tuple == ("m.room.topic", "")
    assert event.pdu["unsigned"] == {"age": 3}
    # unsigned is outside the hash and signatures.
    assert check_content_hash(event.pdu)
    verify_event_signatures(event, KEYS)
    assert "state_key" not in build("10").pdu


@pytest.mark.parametrize("version", ["1", "3", "10"])
def test_redaction_before_v11_uses_top_level_redacts(version: str) -> None:
    event = build(
        version, type="m.room.redaction", content={"reason": "spam"}, redacts="$target:example.org"
    )
    assert event.pdu["redacts"] == "$target:example.org"
    assert event.pdu["content"] == {"reason": "spam"}
    assert event.redacts == "$target:example.org"


@pytest.mark.parametrize("version", ["11", "12"])
def test_redaction_from_v11_uses_content_redacts(version: str) -> None:
    content = {"reason": "spam"}
    event = build(version, type="m.room.redaction", content=content, redacts=V4_ID)
    # Synapse sends only content.redacts in v11+ rooms.
    assert event.pdu["content"] == {"reason": "spam", "redacts": V4_ID}
    assert "redacts" not in event.pdu
    assert event.redacts == V4_ID
    assert content == {"reason": "spam"}  # the caller's dict is not modified


def test_v12_create_event_has_no_room_id() -> None:
    rv = get_room_version("12")
    create = build(
        "12",
        room_id=None,
        type="m.room.create",
        state_key="",
        content={"room_version": "12"},
        prev_event_ids=[],
        auth_event_ids=[],
        depth=1,
    )
    assert "room_id" not in create.pdu
    assert create.room_id == "!" + create.event_id[1:]
    verify_event_signatures(create, KEYS)
    # The next event lives in the room the create event names, without citing it.
    member = build(
        "12",
        room_id=create.room_id,
        type="m.room.member",
        state_key="@alice:example.org",
        content={"membership": "join"},
        prev_event_ids=[create.event_id],
        auth_event_ids=[],
        depth=2,
    )
    assert member.room_id == create.room_id
    validate_pdu_format(member.pdu, rv)
    with pytest.raises(EventFormatError, match="must not list the create"):
        build("12", room_id=create.room_id, auth_event_ids=[create.event_id])


def test_room_id_rules() -> None:
    with pytest.raises(EventFormatError, match="no room_id"):
        build("12", type="m.room.create", state_key="", prev_event_ids=[], auth_event_ids=[])
    with pytest.raises(EventFormatError, match="room_id is required"):
        build("11", room_id=None)
    with pytest.raises(EventFormatError, match="room_id is required"):
        build("11", room_id=None, type="m.room.create", state_key="")


def test_builder_refuses_invalid_events() -> None:
    with pytest.raises(EventFormatError, match="more than 65536"):
        build("10", content={"body": "x" * 70000})
    with pytest.raises(EventFormatError, match="floats"):
        build("10", content={"n": 0.5})
    with pytest.raises(EventFormatError, match="more than 20"):
        build("10", prev_event_ids=[V4_ID] * 21)
