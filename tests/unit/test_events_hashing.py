"""Content hashes, reference hashes and the event ID formats of v1, v3 and v4+, checked
against events and IDs recorded from Synapse (interop captures, by-room-version)."""

from __future__ import annotations

import copy

import pytest

from homeserver.events import Event, get_room_version
from homeserver.events.hashing import (
    add_content_hash,
    check_content_hash,
    compute_event_id,
    compute_reference_hash,
)

# Synapse's join of @bob in a v3 room; Synapse PUT it to send_join/<this event ID>.
V3_JOIN = {
    "auth_events": [
        "$3t0O7fO2DfV8Azi/na2lKa4lyyhBnw8ze6rC9T/HToY",
        "$GRDO5pZgvjO2fUk4JaEsOmhHwtvhRVYJodzbppiBvpg",
        "$eIj3OGZQQI2i2nMt9YyJCK9WrDJDrw6K1pwj45sTL20",
    ],
    "content": {"avatar_url": None, "displayname": "bob-99875bab", "membership": "join"},
    "depth": 13,
    "hashes": {"sha256": "PZek+UtPSXDcyXE4O6KagVIGmNCIvNqnRGYhV0lYeRg"},
    "origin_server_ts": 1795749978873,
    "prev_events": ["$qeRHMnuqM6EbW4vnlPFqLghkn/HwJHaQqecwbLvrdJ4"],
    "room_id": "!CdJmZIMAHXfmLiQGyI:127.0.0.1:8481",
    "sender": "@bob-99875bab:127.0.0.1:8482",
    "signatures": {
        "127.0.0.1:8482": {
            "ed25519:a_wWGY": "+fJKXORRV4J9kVyR7skrqk8G3jb84iGWGORkVsLMqkdUzudGuyeGwNwy/GImmTUjnMzZmJ4OCExfpFZIwWV0AA"
        }
    },
    "state_key": "@bob-99875bab:127.0.0.1:8482",
    "type": "m.room.member",
    "unsigned": {"age": 4},
}
V3_JOIN_ID = "$LK6RjdrgT8F+4TVUktpAeKnFRuFfdtdaBIfpCZu5EE4"

V4_JOIN = {
    "auth_events": [
        "$pT8mnnc41U4NwVGlvaTZH88r6_vA94W2QRQfIOS3KOI",
        "$MtZY91XPExaaiublR1e3-wtunB9CdiL5TgPKXJQ3PKY",
        "$PsjH-D8jx3iX3zh9McKNI8SPnOHpHXNNV2HeE7-gWRM",
    ],
    "content": {"avatar_url": None, "displayname": "bob-4d22aa6f", "membership": "join"},
    "depth": 13,
    "hashes": {"sha256": "58eX7EyKi6VqgD/WBQLixuvFGbBpTrD1UVPmtW65O+M"},
    "origin_server_ts": 1795749989509,
    "prev_events": ["$-B9UD7KrYHgP0fj1t086FWJjQ4-Zli5wRT4qfOtDQKw"],
    "room_id": "!AxmwChBHCvQJUXKqZq:127.0.0.1:8481",
    "sender": "@bob-4d22aa6f:127.0.0.1:8482",
    "signatures": {
        "127.0.0.1:8482": {
            "ed25519:a_wWGY": "XN8349TuyaRIfp37KTgVBVF3M8BxKUEdrWdw9JOy1ouRXUywvqeCmmWP/s67rOXKZevP6HhTBlvU1VmrTuxaAQ"
        }
    },
    "state_key": "@bob-4d22aa6f:127.0.0.1:8482",
    "type": "m.room.member",
    "unsigned": {"age": 4},
}
V4_JOIN_ID = "$NLr9rl_opmSQNg2NNjXq8e3bSVCbk-w7qOMt9pHyKhc"

# A v12 create event (no room_id): the room's ID is `!` + its event ID's hash.
V12_CREATE = {
    "signatures": {
        "127.0.0.1:8481": {
            "ed25519:a_YZls": "pJ5qypPPsUpjuFZfCFF5CsgaqY4CHEbELLo3WbpA22tOgPrU/hl6jKl0r/+GCtQWRH1b6lmD/gNQ4x747ZwBCw"
        }
    },
    "unsigned": {"age_ts": 1795750069890},
    "auth_events": [],
    "prev_events": [],
    "content": {"room_version": "12"},
    "depth": 1,
    "hashes": {"sha256": "Z/QBnoGyWYUJoOeyz4831NUPIAPHUXiilqOh1WdjCrM"},
    "origin_server_ts": 1795750069890,
    "sender": "@alice-a0712823:127.0.0.1:8481",
    "state_key": "",
    "type": "m.room.create",
}
V12_ROOM_ID = "!tNtttfrYyVP9rZuAQiNP0oITXIYeXaIm65Nb5yu6LZs"


def test_v3_event_id_is_standard_base64_of_reference_hash() -> None:
    assert compute_event_id(V3_JOIN, get_room_version("3")) == V3_JOIN_ID
    assert check_content_hash(V3_JOIN)


def test_v4_event_id_is_url_safe_base64_of_reference_hash() -> None:
    assert compute_event_id(V4_JOIN, get_room_version("4")) == V4_JOIN_ID
    assert compute_event_id(V4_JOIN, get_room_version("11")) == V4_JOIN_ID
    assert check_content_hash(V4_JOIN)


def test_v3_and_v4_ids_differ_only_in_alphabet() -> None:
    v3 = compute_event_id(V3_JOIN, get_room_version("3"))
    v4 = compute_event_id(V3_JOIN, get_room_version("4"))
    assert v4 == v3.replace("+", "-").replace("/", "_")
    assert v3 != v4  # this hash has a '+', so the alphabets matter


def test_v1_event_id_is_carried_in_the_event() -> None:
    pdu = dict(V3_JOIN, event_id="$17957499580TsrJx:127.0.0.1:8482")
    assert compute_event_id(pdu, get_room_version("1")) == "$17957499580TsrJx:127.0.0.1:8482"
    with pytest.raises(ValueError, match="event_id"):
        compute_event_id(V3_JOIN, get_room_version("2"))


def test_v12_room_id_is_derived_from_create_event() -> None:
    event = Event(V12_CREATE, get_room_version("12"))
    assert event.room_id == V12_ROOM_ID
    assert event.event_id == "$" + V12_ROOM_ID[1:]


def test_reference_hash_ignores_unsigned_signatures_and_redactable_content() -> None:
    rv = get_room_version("4")
    base = compute_reference_hash(V4_JOIN, rv)
    changed = copy.deepcopy(V4_JOIN)
    changed["unsigned"] = {"age": 99}
    changed["signatures"] = {}
    changed["content"]["displayname"] = "someone else"
    assert compute_reference_hash(changed, rv) == base
    changed["content"]["membership"] = "leave"
    assert compute_reference_hash(changed, rv) != base


def test_content_hash_covers_content_but_not_unsigned() -> None:
    pdu = copy.deepcopy(V4_JOIN)
    pdu["unsigned"] = {"age": 1000}
    pdu["signatures"] = {}
    assert check_content_hash(pdu)
    pdu["content"]["displayname"] = "x"
    assert not check_content_hash(pdu)
    add_content_hash(pdu)
    assert check_content_hash(pdu)
    assert pdu["hashes"]["sha256"] != V4_JOIN["hashes"]["sha256"]


@pytest.mark.parametrize("hashes", [None, {}, {"sha256": 5}, "x"])
def test_check_content_hash_rejects_missing_or_malformed(hashes) -> None:
    pdu = dict(V4_JOIN, hashes=hashes)
    assert not check_content_hash(pdu)
