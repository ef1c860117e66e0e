"""validate_pdu_format: what a well-formed PDU of each room version looks like, and the
readable reasons it gives for everything else."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from homeserver.events import get_room_version
from homeserver.events.canonical import encode_canonical_json
from homeserver.events.validation import MAX_PDU_SIZE, EventFormatError, validate_pdu_format

V3_ID = "$3t0O7fO2DfV8Azi/na2lKa4lyyhBnw8ze6rC9T/HToY"
V4_ID = "$pT8mnnc41U4NwVGlvaTZH88r6_vA94W2QRQfIOS3KOI"
V12_ROOM = "!tNtttfrYyVP9rZuAQiNP0oITXIYeXaIm65Nb5yu6LZs"


def pdu_for(version: str, **changes: Any) -> dict[str, Any]:
    """A well-formed m.room.message PDU in the layout of `version`."""
    rv = get_room_version(version)
    pdu: dict[str, Any] = {
        "type": "m.room.message",
        "sender": "@alice:example.org",
        "room_id": V12_ROOM if rv.room_id_is_create_event_id else "!room:example.org",
        "content": {"msgtype": "m.text", "body": "hi"},
        "depth": 3,
        "origin_server_ts": 1700000000000,
        "hashes": {"sha256": "abc"},
        "signatures": {"example.org": {"ed25519:1": "sig"}},
        "unsigned": {"age": 5},
    }
    if rv.event_id_in_event:
        pdu["event_id"] = "$abc:example.org"
        pdu["prev_events"] = [["$p:example.org", {"sha256": "h"}]]
        pdu["auth_events"] = [["$a:example.org", {}]]
    else:
        eid = V3_ID if version == "3" else V4_ID
        pdu["prev_events"] = [eid]
        pdu["auth_events"] = [eid]
    pdu.update(changes)
    return pdu


def rejects(pdu: dict[str, Any], version: str, reason: str) -> None:
    with pytest.raises(EventFormatError, match=reason):
        validate_pdu_format(pdu, get_room_version(version))


def accepts(pdu: dict[str, Any], version: str) -> None:
    validate_pdu_format(pdu, get_room_version(version))


ALL_VERSIONS = [str(v) for v in range(1, 13)]


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_well_formed_event_passes(version: str) -> None:
    accepts(pdu_for(version), version)
    accepts(pdu_for(version, state_key="", type="m.room.topic"), version)


def test_error_is_a_value_error() -> None:
    assert issubclass(EventFormatError, ValueError)
    rejects([], "10", "JSON object")  # type: ignore[arg-type]


# --- size limits ---------------------------------------------------------------------


def _padded_to(size: int, version: str = "10") -> dict[str, Any]:
    pdu = pdu_for(version)
    pdu["content"]["body"] = ""
    without_unsigned = {k: v for k, v in pdu.items() if k != "unsigned"}
    pdu["content"]["body"] = "x" * (size - len(encode_canonical_json(without_unsigned)))
    return pdu


def test_pdu_of_exactly_65536_bytes_passes_and_one_more_fails() -> None:
    accepts(_padded_to(MAX_PDU_SIZE), "10")
    rejects(_padded_to(MAX_PDU_SIZE + 1), "10", "65537 bytes, more than 65536")
    rejects(pdu_for("1", content={"body": "x" * 70000}), "1", "more than 65536")


def test_unsigned_does_not_count_towards_the_size_limit() -> None:
    pdu = _padded_to(MAX_PDU_SIZE)
    pdu["unsigned"] = {"invite_room_state": ["x" * 10000]}
    accepts(pdu, "10")


@pytest.mark.parametrize("key", ["state_key", "type"])
def test_255_byte_keys(key: str) -> None:
    def with_key(value: str) -> dict[str, Any]:
        return pdu_for("10", **{"state_key": "", key: value})

    accepts(with_key("a" * 255), "10")
    rejects(with_key("a" * 256), "10", f"'{key}' is longer than 255")
    # Bytes, not characters: 128 two-byte characters are 256 bytes.
    rejects(with_key("é" * 128), "10", "longer than 255 bytes")


def test_long_sender_room_id_and_event_id() -> None:
    rejects(pdu_for("10", sender="@" + "a" * 250 + ":example.org"), "10", "sender.*255")
    rejects(pdu_for("10", room_id="!" + "a" * 250 + ":example.org"), "10", "room_id.*255")
    long_id = "$" + "a" * 250 + ":example.org"
    rejects(pdu_for("1", event_id=long_id), "1", "event_id.*255")


# --- canonical JSON: v6+ is strict, v1-v5 are not ------------------------------------


@pytest.mark.parametrize("version", ["6", "7", "10", "11", "12"])
def test_float_rejected_from_v6(version: str) -> None:
    rejects(pdu_for(version, content={"n": 1.5}), version, "not canonical JSON: floats")


@pytest.mark.parametrize("version", ["1", "3", "5"])
def test_float_allowed_before_v6(version: str) -> None:
    accepts(pdu_for(version, content={"n": 1.5}), version)


def test_int_2_pow_53_rejected_in_v6_but_allowed_in_v5() -> None:
    rejects(pdu_for("6", content={"n": 2**53}), "6", "out of range")
    rejects(pdu_for("6", content={"n": -(2**53)}), "6", "out of range")
    accepts(pdu_for("6", content={"n": 2**53 - 1}), "6")
    accepts(pdu_for("5", content={"n": 2**53}), "5")
    # Strictness covers every part of the event, not just content.
    rejects(pdu_for("6", depth=2**53), "6", "out of range")
    accepts(pdu_for("5", depth=2**53), "5")


def test_depth_range() -> None:
    accepts(pdu_for("5", depth=2**63 - 1), "5")
    rejects(pdu_for("5", depth=2**63), "5", "'depth' is out of range")
    rejects(pdu_for("10", depth=-1), "10", "'depth' is out of range")


def test_lone_surrogate_rejected_in_v6() -> None:
    rejects(pdu_for("6", content={"body": "\ud800"}), "6", "surrogate")


def test_nan_is_never_json() -> None:
    rejects(pdu_for("5", content={"n": float("nan")}), "5", "not encodable")


# --- required keys and their types ---------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "type",
        "sender",
        "room_id",
        "content",
        "depth",
        "origin_server_ts",
        "prev_events",
        "auth_events",
        "hashes",
        "signatures",
    ],
)
@pytest.mark.parametrize("version", ["1", "10"])
def test_missing_required_key(key: str, version: str) -> None:
    pdu = pdu_for(version)
    del pdu[key]
    rejects(pdu, version, f"missing '{key}'")


def test_v1_v2_need_event_id() -> None:
    pdu = pdu_for("2")
    del pdu["event_id"]
    rejects(pdu, "2", "missing 'event_id'")
    rejects(pdu_for("1", event_id="$noserver"), "1", "event ID '\\$noserver' is malformed")


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("type", True, "'type' must be a string"),
        ("sender", True, "'sender' must be a string"),
        ("room_id", False, "'room_id' must be a string"),
        ("state_key", True, "'state_key' must be a string"),
        ("state_key", 5, "'state_key' must be a string"),
        ("content", [], "'content' must be an object"),
        ("content", "text", "'content' must be an object"),
        ("depth", True, "'depth' must be an integer"),
        ("depth", "3", "'depth' must be an integer"),
        ("depth", 3.0, "'depth' must be an integer"),
        ("origin_server_ts", False, "'origin_server_ts' must be an integer"),
        ("origin_server_ts", "1", "'origin_server_ts' must be an integer"),
        ("prev_events", {}, "'prev_events' must be a list"),
        ("auth_events", "$x", "'auth_events' must be a list"),
        ("hashes", [], "'hashes' must be an object"),
        ("hashes", {}, "string 'sha256'"),
        ("hashes", {"sha256": True}, "string 'sha256'"),
        ("signatures", [], "'signatures' must be an object"),
        ("signatures", {"example.org": "sig"}, "signatures.example.org"),
        ("signatures", {"example.org": {"ed25519:1": 5}}, "signatures.example.org"),
        ("unsigned", [], "'unsigned' must be an object"),
        ("redacts", True, "'redacts' must be a string"),
        ("origin", 5, "'origin' must be a string"),
    ],
)
def test_wrong_types(key: str, value: Any, reason: str) -> None:
    rejects(pdu_for("4", **{key: value}), "4", reason)


@pytest.mark.parametrize(
    ("sender", "reason"),
    [
        ("alice:example.org", "must start with '@'"),
        ("@alice", "must contain a server name"),
        ("@:example.org", "empty localpart"),
        ("@alice:exa mple.org", "invalid host"),
        ("@al:ice:example.org", "invalid port"),
    ],
)
def test_sender_grammar(sender: str, reason: str) -> None:
    rejects(pdu_for("10", sender=sender), "10", reason)


def test_historical_sender_localparts_are_accepted() -> None:
    accepts(pdu_for("10", sender="@Alice!Old=Style:example.org"), "10")


def test_room_id_grammar() -> None:
    rejects(pdu_for("10", room_id="#room:example.org"), "10", "must be a string starting with '!'")
    rejects(pdu_for("10", room_id="!noserver"), "10", "must contain a server name")


# --- prev_events / auth_events shapes ------------------------------------------------


def test_v1_edges_are_pairs() -> None:
    accepts(pdu_for("1", prev_events=[["$p:example.org", {}]]), "1")
    rejects(pdu_for("1", prev_events=["$p:example.org"]), "1", r"prev_events\[0\] must be an")
    rejects(pdu_for("2", auth_events=[["$p:example.org"]]), "2", r"auth_events\[0\] must be an")
    rejects(pdu_for("1", prev_events=[["$p:example.org", {"sha256": 1}]]), "1", "hashes must")
    rejects(pdu_for("1", prev_events=[[5, {}]]), "1", "event ID must be a string")


def test_v3_plus_edges_are_plain_ids() -> None:
    rejects(pdu_for("3", prev_events=[[V3_ID, {}]]), "3", "event ID must be a string")
    rejects(pdu_for("3", auth_events=["$a:example.org"]), "3", "not a room v3 event ID")
    # The v4 alphabet is URL-safe base64; the v3 one standard base64.
    rejects(pdu_for("3", prev_events=[V4_ID]), "3", "not a room v3 event ID")
    rejects(pdu_for("4", prev_events=[V3_ID]), "4", "not a room v4\\+ event ID")


def test_edge_count_limits() -> None:
    accepts(pdu_for("10", prev_events=[V4_ID] * 20, auth_events=[V4_ID] * 10), "10")
    rejects(pdu_for("10", prev_events=[V4_ID] * 21), "10", "'prev_events' has more than 20")
    rejects(pdu_for("10", auth_events=[V4_ID] * 11), "10", "'auth_events' has more than 10")
    edges = [["$p:example.org", {}]]
    rejects(pdu_for("1", prev_events=edges * 21), "1", "more than 20")


# --- room version 12 -----------------------------------------------------------------


def _v12_create(**changes: Any) -> dict[str, Any]:
    pdu = pdu_for("12", type="m.room.create", state_key="", prev_events=[], auth_events=[])
    pdu["content"] = {"room_version": "12"}
    del pdu["room_id"]
    pdu.update(changes)
    return pdu


def test_v12_create_has_no_room_id() -> None:
    accepts(_v12_create(), "12")
    rejects(_v12_create(room_id=V12_ROOM), "12", "must not have a 'room_id'")
    # A non-state "create" is an ordinary event and needs a room_id.
    pdu = _v12_create()
    del pdu["state_key"]
    rejects(pdu, "12", "missing 'room_id'")


def test_before_v12_create_needs_room_id() -> None:
    pdu = copy.deepcopy(_v12_create())
    pdu["prev_events"] = pdu["auth_events"] = []
    rejects(pdu, "11", "missing 'room_id'")


def test_v12_room_id_is_a_hash() -> None:
    rejects(pdu_for("12", room_id="!room:example.org"), "12", "create event's reference hash")
    rejects(pdu_for("12", room_id="!short"), "12", "create event's reference hash")


def test_v12_auth_events_must_not_list_the_create_event() -> None:
    create_id = "$" + V12_ROOM[1:]
    rejects(pdu_for("12", auth_events=[V4_ID, create_id]), "12", "must not list the create")
    # In v11 the create event is a normal auth event.
    accepts(pdu_for("11", auth_events=[V4_ID, create_id]), "11")
