"""Authorisation rules: third-party invites, ordinary events, m.room.aliases, redactions.

See auth_rules_kit.py for how the rooms are built.
"""

from __future__ import annotations

from typing import Any

import pytest
from signedjson.key import encode_verify_key_base64, generate_signing_key
from signedjson.sign import sign_json

from homeserver.events.event import Event
from homeserver.events.room_versions import RoomVersion
from tests.unit.auth_rules_kit import ALICE, BOB, CAROL, EVE, MOD, Room, standard_room, versions

# --------------------------------------------------------------------------------------
# Third-party invites
# --------------------------------------------------------------------------------------

IDENTITY_KEY = generate_signing_key("0")
OTHER_KEY = generate_signing_key("0")
TOKEN = "abc123"


def _key_needing_urlsafe_alphabet() -> Any:
    while True:
        key = generate_signing_key("0")
        if set(encode_verify_key_base64(key.verify_key)) & {"+", "/"}:
            return key


URLSAFE_KEY = _key_needing_urlsafe_alphabet()


def signed_block(mxid: str = CAROL, token: str = TOKEN, key: Any = IDENTITY_KEY) -> dict:
    return sign_json({"mxid": mxid, "token": token}, "id.test", key)


def third_party_room(rv: RoomVersion, public_key_content: dict[str, Any] | None = None) -> Room:
    room = standard_room(rv)
    content = public_key_content or {
        "display_name": "c...@example.com",
        "key_validity_url": "https://id.test/isvalid",
        "public_key": encode_verify_key_base64(IDENTITY_KEY.verify_key),
    }
    room.add(room.state_event("m.room.third_party_invite", TOKEN, ALICE, content))
    return room


def tpi_invite(room: Room, signed: Any, sender: str = ALICE, target: str = CAROL) -> Event:
    return room.member(
        target, "invite", sender=sender, third_party_invite={"display_name": "c", "signed": signed}
    )


@pytest.mark.parametrize("rv", versions())
def test_third_party_invite_valid_signature(rv: RoomVersion) -> None:
    room = third_party_room(rv)
    assert room.allowed(tpi_invite(room, signed_block()))


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("forged", False),
        ("tampered", False),
        ("unsigned", False),
        ("mxid_mismatch", False),
        ("no_mxid", False),
        ("unknown_token", False),
        ("other_sender", False),
        ("target_banned", False),
        ("no_signed", False),
        ("public_keys_list", True),
        ("urlsafe_key", True),
        ("inviter_not_joined_is_irrelevant", True),
    ],
)
@pytest.mark.parametrize("rv", versions())
def test_third_party_invite_cases(rv: RoomVersion, case: str, expected: bool) -> None:
    room = third_party_room(rv)
    signed: Any = signed_block()
    target, sender = CAROL, ALICE
    if case == "forged":
        signed = signed_block(key=OTHER_KEY)
    elif case == "tampered":
        signed["display_name"] = "added after signing"
    elif case == "unsigned":
        signed = {"mxid": CAROL, "token": TOKEN}
    elif case == "mxid_mismatch":
        signed = signed_block(mxid=BOB)
    elif case == "no_mxid":
        signed = sign_json({"token": TOKEN}, "id.test", IDENTITY_KEY)
    elif case == "unknown_token":
        signed = signed_block(token="nope")
    elif case == "other_sender":
        sender = MOD
    elif case == "target_banned":
        target = EVE
        signed = signed_block(mxid=EVE)
    elif case == "no_signed":
        signed = None
    elif case == "public_keys_list":
        room = third_party_room(
            rv,
            {
                "public_key": encode_verify_key_base64(OTHER_KEY.verify_key),
                "public_keys": [
                    {"public_key": encode_verify_key_base64(IDENTITY_KEY.verify_key)},
                ],
            },
        )
    elif case == "urlsafe_key":
        key = encode_verify_key_base64(URLSAFE_KEY.verify_key).replace("+", "-").replace("/", "_")
        assert "-" in key or "_" in key  # the URL-safe alphabet is really exercised
        room = third_party_room(rv, {"public_key": key})
        signed = signed_block(key=URLSAFE_KEY)
    elif case == "inviter_not_joined_is_irrelevant":
        # The signed block, not the inviter's membership, authorises a 3pid invite.
        room.set_member(ALICE, "leave")
    event = (
        room.member(target, "invite", sender=sender, third_party_invite={"display_name": "c"})
        if signed is None
        else tpi_invite(room, signed, sender=sender, target=target)
    )
    assert room.allowed(event) is expected


@pytest.mark.parametrize("rv", versions())
def test_third_party_invite_event_needs_invite_level(rv: RoomVersion) -> None:
    room = standard_room(rv)
    content = {"display_name": "x", "public_key": "abc", "key_validity_url": "https://id.test"}
    assert room.allowed(room.state_event("m.room.third_party_invite", "t", BOB, content))
    room.add(room.power_levels(ALICE, room.default_power_levels() | {"invite": 10}))
    assert not room.allowed(room.state_event("m.room.third_party_invite", "t", BOB, content))
    assert room.allowed(room.state_event("m.room.third_party_invite", "t", MOD, content))
    # Not joined: refused whatever the level.
    assert not room.allowed(room.state_event("m.room.third_party_invite", "t", CAROL, content))


# --------------------------------------------------------------------------------------
# Non-membership events: joined sender, required levels, '@' state keys
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "event_type", "state_key", "expected"),
    [
        (BOB, "m.room.message", None, True),
        (CAROL, "m.room.message", None, False),  # not joined
        (EVE, "m.room.message", None, False),  # banned
        (BOB, "m.room.topic", "", False),  # state_default 50
        (MOD, "m.room.topic", "", True),
        (MOD, "m.room.name", "", True),  # events: 50
        (BOB, "m.room.name", "", False),
        (MOD, "m.room.power_levels", "x", False),  # events: 100 applies to any state key
        (MOD, "m.custom", "@mod:b.test", True),
        (MOD, "m.custom", "@bob:b.test", False),  # '@' state key of someone else
        (ALICE, "m.custom", "@bob:b.test", False),
        (MOD, "m.custom", "@", False),
        (MOD, "m.custom", "bob", True),
    ],
)
@pytest.mark.parametrize("rv", versions())
def test_ordinary_events(
    rv: RoomVersion, sender: str, event_type: str, state_key: str | None, expected: bool
) -> None:
    room = standard_room(rv)
    event = room.event(event_type, sender, {"body": "x"}, state_key=state_key)
    assert room.allowed(event) is expected


@pytest.mark.parametrize("rv", versions())
def test_events_default_and_state_default_without_power_levels(rv: RoomVersion) -> None:
    room = standard_room(rv, with_power_levels=False)
    # No power levels event: state_default is still 50 (as Synapse), so only the
    # creator (at 100) may set state.
    assert not room.allowed(room.state_event("m.room.topic", "", BOB, {"topic": "x"}))
    assert room.allowed(room.state_event("m.room.topic", "", ALICE, {"topic": "x"}))
    room.add(room.power_levels(ALICE, {"events_default": 10, "users": {MOD: 10}}))
    assert not room.allowed(room.event("m.room.message", BOB, {}))
    assert room.allowed(room.event("m.room.message", MOD, {}))
    # A power levels event without state_default: 50.
    assert not room.allowed(room.state_event("m.room.topic", "", MOD, {"topic": "x"}))


# --------------------------------------------------------------------------------------
# m.room.aliases: special in v1-5 only
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "state_key", "v1_5", "v6_plus"),
    [
        (CAROL, "c.test", True, False),  # not joined: fine in v1-5
        (CAROL, "a.test", False, False),
        (BOB, "b.test", True, False),  # below state_default in v6+
        (ALICE, "a.test", True, True),
        (ALICE, "b.test", False, True),
        (CAROL, None, False, False),
    ],
)
@pytest.mark.parametrize("rv", versions())
def test_aliases(
    rv: RoomVersion, sender: str, state_key: str | None, v1_5: bool, v6_plus: bool
) -> None:
    room = standard_room(rv)
    event = room.event("m.room.aliases", sender, {"aliases": ["#x:a.test"]}, state_key=state_key)
    assert room.allowed(event) is (v1_5 if rv.special_case_aliases_auth else v6_plus)


# --------------------------------------------------------------------------------------
# Redactions: the redact level / same-server rule exists in v1-2 only
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "redacts", "v1_2", "v3_plus"),
    [
        (BOB, "$target:b.test", True, True),  # same server as the redaction's event ID
        (BOB, "$target:a.test", False, True),  # other server, below the redact level
        (MOD, "$target:a.test", True, True),  # at the redact level
        (ALICE, "$target:c.test", True, True),
        (CAROL, "$target:c.test", False, False),  # not joined
    ],
)
@pytest.mark.parametrize("rv", versions())
def test_redaction(rv: RoomVersion, sender: str, redacts: str, v1_2: bool, v3_plus: bool) -> None:
    room = standard_room(rv)
    # v11+ carry `redacts` in content, earlier versions at the top level.
    if rv.redaction_rules >= 11:
        event = room.event("m.room.redaction", sender, {"redacts": redacts})
    else:
        event = room.event("m.room.redaction", sender, {}, redacts=redacts)
    assert room.allowed(event) is (v1_2 if rv.event_id_in_event else v3_plus)


@pytest.mark.parametrize("rv", versions())
def test_redaction_subject_to_event_level(rv: RoomVersion) -> None:
    room = standard_room(rv)
    levels = room.default_power_levels()
    levels["events"] = {"m.room.redaction": 60}
    room.add(room.power_levels(ALICE, levels))
    event = room.event("m.room.redaction", MOD, {"redacts": "$x:b.test"}, redacts="$x:b.test")
    assert not room.allowed(event)
    event = room.event("m.room.redaction", ALICE, {"redacts": "$x:b.test"}, redacts="$x:b.test")
    assert room.allowed(event)
