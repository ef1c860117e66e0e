"""Pure pieces of the rooms area: client event format, pagination tokens, event filters."""

from __future__ import annotations

import pytest

from homeserver.client.room_services import room_token
from homeserver.errors import MatrixError
from homeserver.events import Event, get_room_version
from homeserver.rooms.client_events import format_client_event, serialize_events
from homeserver.rooms.event_filter import RoomEventFilter
from homeserver.rooms.pagination import RoomToken

V10 = get_room_version("10")


def _event(**fields: object) -> Event:
    pdu = {
        "type": "m.room.message",
        "room_id": "!r:test.local",
        "sender": "@a:test.local",
        "content": {"body": "hi", "msgtype": "m.text"},
        "origin_server_ts": 1000,
        "depth": 3,
        "prev_events": [],
        "auth_events": [],
        "hashes": {"sha256": "x"},
        "signatures": {},
        **fields,
    }
    return Event(pdu, V10, "$e")


def test_client_format_drops_federation_fields() -> None:
    out = format_client_event(_event(), now_ms=1500, txn_id="t1")
    assert out == {
        "content": {"body": "hi", "msgtype": "m.text"},
        "event_id": "$e",
        "origin_server_ts": 1000,
        "room_id": "!r:test.local",
        "sender": "@a:test.local",
        "type": "m.room.message",
        "unsigned": {"age": 500, "transaction_id": "t1"},
    }


def test_client_format_redacted_and_prev_state() -> None:
    redaction = Event(
        {
            "type": "m.room.redaction",
            "room_id": "!r:test.local",
            "sender": "@m:test.local",
            "redacts": "$e",
            "content": {"reason": "spam"},
            "origin_server_ts": 1200,
        },
        V10,
        "$red",
    )
    out = format_client_event(_event(), now_ms=2000, redacted_because=redaction)
    assert out["content"] == {}
    assert out["unsigned"]["redacted_because"]["redacts"] == "$e"
    assert out["unsigned"]["redacted_because"]["unsigned"] == {"age": 800}
    member = _event(
        type="m.room.member",
        state_key="@a:test.local",
        content={"membership": "join", "displayname": "A"},
    )
    prev = _event(type="m.room.member", state_key="@a:test.local", content={"membership": "invite"})
    (formatted,) = serialize_events([member], now_ms=1000, prev_state={"$e": prev})
    assert formatted["state_key"] == "@a:test.local"
    assert formatted["unsigned"]["prev_content"] == {"membership": "invite"}
    assert formatted["unsigned"]["replaces_state"] == "$e"
    redacted_member = format_client_event(member, now_ms=1000, redacted_because=redaction)
    assert redacted_member["content"] == {"membership": "join"}


def test_room_tokens() -> None:
    assert RoomToken.parse("t42") == RoomToken(42)
    assert RoomToken.parse("t-3") == RoomToken(-3)
    assert RoomToken.parse("t7-42") == RoomToken(42)
    assert RoomToken(42).encode() == "t42"
    for bad in ("", "x1", "t", "tabc", "t1.5", "s-1", "t" + "9" * 40):
        with pytest.raises(MatrixError):
            room_token(bad)
    # What a client hands /messages: ours, or a sync token naming the same point.
    assert room_token("t42") == RoomToken(42)
    assert room_token("s42_1_2_3_4_5_6") == RoomToken(42)
    with pytest.raises(MatrixError):
        RoomToken.parse("s42_1_2_3_4_5_6")  # the room service itself knows no sync tokens


def test_event_filter_matching() -> None:
    f = RoomEventFilter.from_json({"types": ["m.room.*"], "not_senders": ["@b:test.local"]})
    assert f.matches(_event())
    assert not f.matches(_event(sender="@b:test.local"))
    assert not f.matches(_event(type="org.x"))
    assert RoomEventFilter.from_query(None).is_noop
    with pytest.raises(MatrixError):
        RoomEventFilter.from_json({"limit": True})
