"""The redaction algorithm per room version (rooms/v1, v6, v8, v9, v11 "Redactions"):
each version's differences asserted on exact output."""

from __future__ import annotations

import copy

import pytest

from homeserver.events import get_room_version
from homeserver.events.redaction import redact

COMMON = {
    "event_id": "$e:x",
    "room_id": "!r:x",
    "sender": "@u:x",
    "depth": 5,
    "origin_server_ts": 7,
    "prev_events": ["$p"],
    "auth_events": ["$a"],
    "hashes": {"sha256": "h"},
    "signatures": {"x": {"ed25519:1": "s"}},
}
# Top-level keys only some versions keep, plus ones no version keeps.
EXTRA_TOP_LEVEL = {
    "origin": "x",
    "membership": "join",
    "prev_state": [],
    "unsigned": {"age": 1},
    "redacts": "$t",
    "custom": 1,
}


def _event(event_type: str, content: dict, state_key: str | None = "") -> dict:
    pdu = dict(COMMON, type=event_type, content=content, **EXTRA_TOP_LEVEL)
    if state_key is not None:
        pdu["state_key"] = state_key
    return pdu


def _redacted_content(version: str, event_type: str, content: dict) -> dict:
    return redact(_event(event_type, content), get_room_version(version))["content"]


def test_top_level_keys_v1_to_v10() -> None:
    for version in ("1", "6", "9", "10"):
        out = redact(_event("m.room.message", {"body": "hi"}, None), get_room_version(version))
        assert out == dict(
            COMMON,
            type="m.room.message",
            content={},
            origin="x",
            membership="join",
            prev_state=[],
        ), version


def test_top_level_keys_v11_drop_origin_membership_prev_state() -> None:
    for version in ("11", "12"):
        out = redact(_event("m.room.message", {"body": "hi"}, None), get_room_version(version))
        assert out == dict(COMMON, type="m.room.message", content={}), version


def test_input_is_not_modified() -> None:
    pdu = _event("m.room.member", {"membership": "join", "displayname": "D"}, "@u:x")
    before = copy.deepcopy(pdu)
    redact(pdu, get_room_version("11"))
    assert pdu == before


def test_state_key_is_kept_even_when_empty() -> None:
    out = redact(_event("m.room.topic", {"topic": "t"}), get_room_version("1"))
    assert out["state_key"] == "" and out["content"] == {}


MEMBER = {
    "membership": "join",
    "displayname": "Alice",
    "avatar_url": "mxc://x/y",
    "join_authorised_via_users_server": "@admin:x",
    "third_party_invite": {"display_name": "alice@example", "signed": {"mxid": "@u:x"}},
}


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("1", {"membership": "join"}),
        ("6", {"membership": "join"}),
        ("8", {"membership": "join"}),
        ("9", {"membership": "join", "join_authorised_via_users_server": "@admin:x"}),
        ("10", {"membership": "join", "join_authorised_via_users_server": "@admin:x"}),
        (
            "11",
            {
                "membership": "join",
                "join_authorised_via_users_server": "@admin:x",
                "third_party_invite": {"signed": {"mxid": "@u:x"}},
            },
        ),
    ],
)
def test_member_content(version: str, expected: dict) -> None:
    assert _redacted_content(version, "m.room.member", MEMBER) == expected


def test_member_v11_third_party_invite_without_signed_is_dropped() -> None:
    content = {"membership": "invite", "third_party_invite": {"display_name": "d"}}
    assert _redacted_content("11", "m.room.member", content) == {"membership": "invite"}


CREATE = {"creator": "@u:x", "room_version": "1", "m.federate": False, "predecessor": {}}


@pytest.mark.parametrize("version", ["1", "6", "8", "9", "10"])
def test_create_keeps_only_creator_before_v11(version: str) -> None:
    assert _redacted_content(version, "m.room.create", CREATE) == {"creator": "@u:x"}


def test_create_keeps_everything_from_v11() -> None:
    assert _redacted_content("11", "m.room.create", CREATE) == CREATE
    assert _redacted_content("12", "m.room.create", CREATE) == CREATE


JOIN_RULES = {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}], "x": 1}


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("1", {"join_rule": "restricted"}),
        ("6", {"join_rule": "restricted"}),
        ("7", {"join_rule": "restricted"}),
        ("8", {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}]}),
        ("11", {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}]}),
    ],
)
def test_join_rules_content(version: str, expected: dict) -> None:
    assert _redacted_content(version, "m.room.join_rules", JOIN_RULES) == expected


POWER_LEVELS = {
    "ban": 50,
    "events": {"m.room.name": 50},
    "events_default": 0,
    "invite": 0,
    "kick": 50,
    "redact": 50,
    "state_default": 50,
    "users": {"@u:x": 100},
    "users_default": 0,
    "notifications": {"room": 50},
}
POWER_LEVELS_V1 = {k: v for k, v in POWER_LEVELS.items() if k not in ("invite", "notifications")}


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("1", POWER_LEVELS_V1),
        ("6", POWER_LEVELS_V1),
        ("10", POWER_LEVELS_V1),
        ("11", dict(POWER_LEVELS_V1, invite=0)),
    ],
)
def test_power_levels_content(version: str, expected: dict) -> None:
    assert _redacted_content(version, "m.room.power_levels", POWER_LEVELS) == expected


@pytest.mark.parametrize(
    ("version", "expected"),
    [("1", {"aliases": ["#a:x"]}), ("5", {"aliases": ["#a:x"]}), ("6", {}), ("11", {})],
)
def test_aliases_special_only_before_v6(version: str, expected: dict) -> None:
    content = {"aliases": ["#a:x"], "other": 1}
    assert _redacted_content(version, "m.room.aliases", content) == expected


@pytest.mark.parametrize("version", ["1", "6", "11"])
def test_history_visibility_kept(version: str) -> None:
    content = {"history_visibility": "shared", "other": 1}
    assert _redacted_content(version, "m.room.history_visibility", content) == {
        "history_visibility": "shared"
    }


@pytest.mark.parametrize(
    ("version", "expected"),
    [("1", {}), ("10", {}), ("11", {"redacts": "$t"}), ("12", {"redacts": "$t"})],
)
def test_redaction_event_content(version: str, expected: dict) -> None:
    pdu = _event("m.room.redaction", {"redacts": "$t", "reason": "spam"}, None)
    out = redact(pdu, get_room_version(version))
    assert out["content"] == expected
    # The top-level `redacts` is never protected (it is not in any version's key list).
    assert "redacts" not in out


def test_non_dict_content_becomes_empty() -> None:
    pdu = _event("m.room.message", None, None)  # type: ignore[arg-type]
    assert redact(pdu, get_room_version("10"))["content"] == {}
