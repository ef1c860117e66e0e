"""Table-driven tests of the authorisation rules, per room version.

Each case builds a small room (create, creator's join, power levels, join rules, and
whatever members the case needs) as plain PDU dicts, then asserts the exact allow/deny
of one new event checked against that state.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from signedjson.key import encode_verify_key_base64, generate_signing_key
from signedjson.sign import sign_json

from homeserver.events.event import Event
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from homeserver.graph.auth_rules import (
    AuthError,
    auth_types_for_event,
    check_auth_events_selection,
    check_auth_rules,
    required_signature_servers,
)
from homeserver.graph.power_levels import get_power_level, parse_power_level

ALL_VERSIONS = sorted(KNOWN_ROOM_VERSIONS.values(), key=lambda rv: int(rv.identifier))

ALICE = "@alice:a.test"  # creator
MOD = "@mod:b.test"  # 50
MOD2 = "@mod2:b.test"  # 50
BOB = "@bob:b.test"  # 0, joined
CAROL = "@carol:c.test"  # not in the room
EVE = "@eve:c.test"  # banned


def versions(pred=lambda rv: True) -> list[Any]:
    return [pytest.param(rv, id=f"v{rv.identifier}") for rv in ALL_VERSIONS if pred(rv)]


def server(user_or_id: str) -> str:
    return user_or_id.partition(":")[2]


class Room:
    """A room's state built from plain PDU dicts for one room version."""

    def __init__(
        self,
        rv: RoomVersion,
        *,
        join_rule: str | None = "invite",
        power_levels: dict[str, Any] | None = None,
        with_power_levels: bool = True,
        create_content: dict[str, Any] | None = None,
        creator: str = ALICE,
    ) -> None:
        self.rv = rv
        self.n = 0
        self.state: dict[tuple[str, str], Event] = {}
        content: dict[str, Any] = {"room_version": rv.identifier}
        if not rv.implicit_room_creator:
            content["creator"] = creator
        content.update(create_content or {})
        pdu: dict[str, Any] = {
            "type": "m.room.create",
            "state_key": "",
            "sender": creator,
            "content": content,
            "prev_events": [],
            "auth_events": [],
            "depth": 1,
            "origin_server_ts": 0,
        }
        if not rv.room_id_is_create_event_id:
            pdu["room_id"] = f"!room:{server(creator)}"
        self.create = self.add(Event(pdu, rv, event_id=f"$create:{server(creator)}"))
        self.room_id = self.create.room_id
        self.add(self.member(creator, "join", prev=[self.create.event_id]))
        if with_power_levels:
            self.add(self.power_levels(creator, power_levels or self.default_power_levels()))
        if join_rule is not None:
            self.add(self.state_event("m.room.join_rules", "", creator, {"join_rule": join_rule}))

    def default_power_levels(self) -> dict[str, Any]:
        users = {MOD: 50, MOD2: 50}
        if not self.rv.privileged_creators:
            users[ALICE] = 100
        return {
            "users": users,
            "users_default": 0,
            "events": {"m.room.name": 50, "m.room.power_levels": 100},
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": 0,
        }

    def event(
        self,
        event_type: str,
        sender: str,
        content: dict[str, Any],
        state_key: str | None = None,
        prev: list[str] | None = None,
        **extra: Any,
    ) -> Event:
        self.n += 1
        pdu: dict[str, Any] = {
            "room_id": self.room_id,
            "type": event_type,
            "sender": sender,
            "content": content,
            "prev_events": prev if prev is not None else ["$previous:a.test"],
            "auth_events": [],
            "depth": self.n + 1,
            "origin_server_ts": self.n,
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        pdu.update(extra)
        return Event(pdu, self.rv, event_id=f"$e{self.n}:{server(sender)}")

    def state_event(
        self, event_type: str, state_key: str, sender: str, content: dict[str, Any]
    ) -> Event:
        return self.event(event_type, sender, content, state_key=state_key)

    def member(
        self,
        user: str,
        membership: str,
        sender: str | None = None,
        prev: list[Any] | None = None,
        **content: Any,
    ) -> Event:
        return self.event(
            "m.room.member",
            sender or user,
            {"membership": membership, **content},
            state_key=user,
            prev=prev,
        )

    def power_levels(self, sender: str, content: dict[str, Any]) -> Event:
        return self.state_event("m.room.power_levels", "", sender, content)

    def add(self, event: Event) -> Event:
        self.state[event.state_tuple] = event
        return event

    def set_member(self, user: str, membership: str | None) -> None:
        if membership is None:
            self.state.pop(("m.room.member", user), None)
        else:
            self.add(self.member(user, membership, sender=ALICE))

    def with_members(self, **memberships: str) -> Room:
        for user, membership in memberships.items():
            self.set_member(user, membership)
        return self

    def allowed(self, event: Event) -> bool:
        try:
            check_auth_rules(event, self.state)
        except AuthError:
            return False
        return True


def standard_room(rv: RoomVersion, **kwargs: Any) -> Room:
    """Alice (creator) joined; mod, mod2, bob joined; eve banned; carol absent."""
    room = Room(rv, **kwargs)
    for user in (MOD, MOD2, BOB):
        room.set_member(user, "join")
    room.set_member(EVE, "ban")
    return room


# --------------------------------------------------------------------------------------
# m.room.create
# --------------------------------------------------------------------------------------


def create_event(rv: RoomVersion, **changes: Any) -> Event:
    content: dict[str, Any] = {"room_version": rv.identifier}
    if not rv.implicit_room_creator:
        content["creator"] = ALICE
    pdu: dict[str, Any] = {
        "type": "m.room.create",
        "state_key": "",
        "sender": ALICE,
        "content": content,
        "prev_events": [],
        "auth_events": [],
        "depth": 1,
        "origin_server_ts": 0,
    }
    if not rv.room_id_is_create_event_id:
        pdu["room_id"] = "!room:a.test"
    content.update(changes.pop("content", {}))
    for key, value in changes.items():
        if value is None:
            pdu.pop(key, None)
        else:
            pdu[key] = value
    return Event(pdu, rv, event_id="$create:a.test")


def create_allowed(event: Event) -> bool:
    try:
        check_auth_rules(event, {})
    except AuthError:
        return False
    return True


@pytest.mark.parametrize("rv", versions())
def test_create_plain_is_allowed(rv: RoomVersion) -> None:
    assert create_allowed(create_event(rv))


@pytest.mark.parametrize("rv", versions())
def test_create_with_prev_events_is_rejected(rv: RoomVersion) -> None:
    assert not create_allowed(create_event(rv, prev_events=["$x:a.test"]))


@pytest.mark.parametrize("rv", versions())
def test_create_with_unknown_room_version_is_rejected(rv: RoomVersion) -> None:
    assert not create_allowed(create_event(rv, content={"room_version": "99"}))
    assert not create_allowed(create_event(rv, content={"room_version": 1}))


@pytest.mark.parametrize("rv", versions())
def test_create_without_creator(rv: RoomVersion) -> None:
    event = create_event(rv)
    event.pdu["content"].pop("creator", None)
    assert create_allowed(event) is rv.implicit_room_creator  # v11+: no creator key needed


@pytest.mark.parametrize("rv", versions())
def test_create_room_id(rv: RoomVersion) -> None:
    foreign_room = create_event(rv, room_id="!room:other.test")
    own_room = create_event(rv, room_id="!room:a.test")
    if rv.room_id_is_create_event_id:
        # v12: a create event must not have a room_id at all.
        assert not create_allowed(foreign_room)
        assert not create_allowed(own_room)
    else:
        assert not create_allowed(foreign_room)
        assert create_allowed(own_room)


@pytest.mark.parametrize(
    ("additional_creators", "valid"),
    [
        ([], True),
        (["@bob:b.test", "@carol:c.test"], True),
        (["bob"], False),
        (["@bob"], False),
        ([5], False),
        ("@bob:b.test", False),
        ({"@bob:b.test": 1}, False),
    ],
)
@pytest.mark.parametrize("rv", versions(lambda rv: rv.identifier in ("11", "12")))
def test_create_additional_creators(rv: RoomVersion, additional_creators: Any, valid: bool) -> None:
    event = create_event(rv, content={"additional_creators": additional_creators})
    # Only v12 gives additional_creators a meaning, so only v12 validates it.
    assert create_allowed(event) is (valid or not rv.privileged_creators)


# --------------------------------------------------------------------------------------
# The event must belong to the create event's room
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("rv", versions())
def test_missing_or_rejected_or_foreign_create_event(rv: RoomVersion) -> None:
    room = standard_room(rv)
    message = room.event("m.room.message", BOB, {"body": "hi"})
    assert room.allowed(message)

    foreign = room.event("m.room.message", BOB, {"body": "hi"}, room_id="!other:a.test")
    assert not room.allowed(foreign)

    without_create = dict(room.state)
    del without_create[("m.room.create", "")]
    with pytest.raises(AuthError, match="no m.room.create"):
        check_auth_rules(message, without_create)

    room.create.rejected_reason = "bad"
    assert not room.allowed(message)


@pytest.mark.parametrize("rv", versions())
def test_m_federate_false(rv: RoomVersion) -> None:
    room = standard_room(rv, create_content={"m.federate": False})
    room.set_member("@alice2:a.test", "join")
    assert room.allowed(room.event("m.room.message", "@alice2:a.test", {}))
    assert not room.allowed(room.event("m.room.message", BOB, {}))
    assert room.allowed(room.member(CAROL, "invite", sender=ALICE))  # alice is on a.test
    room.state[("m.room.join_rules", "")] = room.state_event(
        "m.room.join_rules", "", ALICE, {"join_rule": "public"}
    )
    assert not room.allowed(room.member(CAROL, "join"))


# --------------------------------------------------------------------------------------
# Membership transitions
# --------------------------------------------------------------------------------------

# (join_rule, sender, target, target's membership before, new membership, allowed)
MEMBERSHIP_MATRIX = [
    # Joining oneself.
    ("public", CAROL, CAROL, None, "join", True),
    ("invite", CAROL, CAROL, None, "join", False),
    ("invite", CAROL, CAROL, "invite", "join", True),
    ("invite", CAROL, CAROL, "join", "join", True),
    ("invite", CAROL, CAROL, "leave", "join", False),
    ("public", CAROL, CAROL, "leave", "join", True),
    ("public", CAROL, CAROL, "ban", "join", False),
    ("invite", CAROL, CAROL, "ban", "join", False),
    ("private", CAROL, CAROL, None, "join", False),
    ("private", CAROL, CAROL, "invite", "join", False),
    ("public", ALICE, CAROL, None, "join", False),  # nobody joins someone else
    # Leaving oneself.
    ("invite", CAROL, CAROL, None, "leave", False),
    ("invite", CAROL, CAROL, "invite", "leave", True),  # rejecting an invite
    ("invite", CAROL, CAROL, "join", "leave", True),
    ("invite", CAROL, CAROL, "leave", "leave", False),
    ("invite", CAROL, CAROL, "ban", "leave", False),
    # Inviting.
    ("invite", ALICE, CAROL, None, "invite", True),
    ("invite", BOB, CAROL, None, "invite", True),  # invite level 0
    ("invite", ALICE, CAROL, "invite", "invite", True),
    ("invite", ALICE, CAROL, "leave", "invite", True),
    ("invite", ALICE, CAROL, "join", "invite", False),
    ("invite", ALICE, CAROL, "ban", "invite", False),
    ("invite", CAROL, "@dave:d.test", None, "invite", False),  # sender not joined
    ("invite", CAROL, CAROL, None, "invite", False),
    # Kicking.
    ("invite", ALICE, BOB, "join", "leave", True),
    ("invite", MOD, BOB, "join", "leave", True),
    ("invite", MOD, BOB, "invite", "leave", True),  # revoking an invite
    ("invite", BOB, MOD, "join", "leave", False),  # below kick level
    ("invite", MOD, MOD2, "join", "leave", False),  # equal peer
    ("invite", MOD, ALICE, "join", "leave", False),  # target above
    ("invite", CAROL, BOB, "join", "leave", False),  # sender not joined
    # Unbanning.
    ("invite", ALICE, EVE, "ban", "leave", True),
    ("invite", MOD, EVE, "ban", "leave", True),
    ("invite", BOB, EVE, "ban", "leave", False),
    # Banning.
    ("invite", ALICE, BOB, "join", "ban", True),
    ("invite", MOD, BOB, "join", "ban", True),
    ("invite", ALICE, CAROL, None, "ban", True),  # pre-emptive ban
    ("invite", MOD, CAROL, "leave", "ban", True),
    ("invite", BOB, CAROL, None, "ban", False),
    ("invite", MOD, MOD2, "join", "ban", False),
    ("invite", MOD, ALICE, "join", "ban", False),
    ("invite", CAROL, BOB, "join", "ban", False),
    ("invite", CAROL, CAROL, None, "ban", False),
    # Unknown memberships.
    ("public", CAROL, CAROL, None, "bogus", False),
    ("public", ALICE, BOB, "join", "bogus", False),
]


@pytest.mark.parametrize(
    ("join_rule", "sender", "target", "before", "membership", "expected"), MEMBERSHIP_MATRIX
)
@pytest.mark.parametrize("rv", versions())
def test_membership_matrix(
    rv: RoomVersion,
    join_rule: str,
    sender: str,
    target: str,
    before: str | None,
    membership: str,
    expected: bool,
) -> None:
    room = standard_room(rv, join_rule=join_rule)
    room.set_member(target, before)
    assert room.allowed(room.member(target, membership, sender=sender)) is expected


@pytest.mark.parametrize("rv", versions())
def test_member_event_needs_state_key_and_membership(rv: RoomVersion) -> None:
    room = standard_room(rv, join_rule="public")
    assert not room.allowed(room.event("m.room.member", CAROL, {"membership": "join"}))
    assert not room.allowed(room.state_event("m.room.member", CAROL, CAROL, {}))


@pytest.mark.parametrize("rv", versions())
def test_invite_below_invite_level(rv: RoomVersion) -> None:
    room = standard_room(rv)
    levels = room.default_power_levels() | {"invite": 50}
    room.add(room.power_levels(ALICE, levels))
    assert not room.allowed(room.member(CAROL, "invite", sender=BOB))
    assert room.allowed(room.member(CAROL, "invite", sender=MOD))


@pytest.mark.parametrize("rv", versions())
def test_unban_needs_ban_level_as_well_as_kick_level(rv: RoomVersion) -> None:
    room = standard_room(rv)
    levels = room.default_power_levels() | {"kick": 0, "ban": 75}
    room.add(room.power_levels(ALICE, levels))
    assert room.allowed(room.member(BOB, "leave", sender=MOD))  # kick at 50 >= 0
    assert not room.allowed(room.member(EVE, "leave", sender=MOD))  # unban: 50 < 75
    assert room.allowed(room.member(EVE, "leave", sender=ALICE))


@pytest.mark.parametrize("rv", versions())
def test_first_join_by_creator(rv: RoomVersion) -> None:
    room = Room(rv, join_rule=None, with_power_levels=False)
    del room.state[("m.room.member", ALICE)]
    create_id = room.create.event_id
    assert room.allowed(room.member(ALICE, "join", prev=[create_id]))
    # Not straight after the create event: the ordinary rules apply (no invite).
    assert not room.allowed(room.member(ALICE, "join", prev=[create_id, "$other:a.test"]))
    assert not room.allowed(room.member(ALICE, "join", prev=["$other:a.test"]))
    # Somebody else cannot use the creator's privilege.
    assert not room.allowed(room.member(BOB, "join", prev=[create_id]))


@pytest.mark.parametrize("rv", versions(lambda rv: not rv.room_id_is_create_event_id))
def test_first_join_with_v1_prev_event_pairs(rv: RoomVersion) -> None:
    room = Room(rv, join_rule=None, with_power_levels=False)
    del room.state[("m.room.member", ALICE)]
    prev = [[room.create.event_id, {"sha256": "abc"}]]
    assert room.allowed(room.member(ALICE, "join", prev=prev))


@pytest.mark.parametrize("rv", versions())
def test_first_join_creator_is_content_creator_until_v11(rv: RoomVersion) -> None:
    """v1-10 name the creator in content.creator; v11+ use the create event's sender."""
    room = Room(rv, join_rule=None, with_power_levels=False, create_content={"creator": BOB})
    del room.state[("m.room.member", ALICE)]
    create_id = room.create.event_id
    assert room.allowed(room.member(BOB, "join", prev=[create_id])) is not rv.implicit_room_creator
    assert room.allowed(room.member(ALICE, "join", prev=[create_id])) is rv.implicit_room_creator


@pytest.mark.parametrize("rv", versions())
def test_join_without_join_rules_event_is_invite_only(rv: RoomVersion) -> None:
    room = standard_room(rv, join_rule=None)
    assert not room.allowed(room.member(CAROL, "join"))
    room.set_member(CAROL, "invite")
    assert room.allowed(room.member(CAROL, "join"))


# --------------------------------------------------------------------------------------
# Knocking (v7+) and knock_restricted (v10+)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("join_rule", "before", "sender", "minimum_version"),
    [
        ("knock", None, CAROL, 7),
        ("knock", "leave", CAROL, 7),
        ("knock_restricted", None, CAROL, 10),
        ("knock", "invite", CAROL, None),
        ("knock", "join", CAROL, None),
        ("knock", "ban", CAROL, None),
        ("knock", None, ALICE, None),  # knocking on someone else's behalf
        ("public", None, CAROL, None),
        ("invite", None, CAROL, None),
        ("restricted", None, CAROL, None),
    ],
)
@pytest.mark.parametrize("rv", versions())
def test_knock(
    rv: RoomVersion, join_rule: str, before: str | None, sender: str, minimum_version: int | None
) -> None:
    room = standard_room(rv, join_rule=join_rule)
    room.set_member(CAROL, before)
    expected = minimum_version is not None and int(rv.identifier) >= minimum_version
    assert room.allowed(room.member(CAROL, "knock", sender=sender)) is expected


@pytest.mark.parametrize("rv", versions())
def test_leave_after_knock_only_from_v7(rv: RoomVersion) -> None:
    room = standard_room(rv, join_rule="knock")
    room.set_member(CAROL, "knock")
    assert room.allowed(room.member(CAROL, "leave")) is rv.knock_join_rule
    # A moderator can turn down the knock (a kick from `knock`) in any version.
    assert room.allowed(room.member(CAROL, "leave", sender=MOD))


@pytest.mark.parametrize("rv", versions())
def test_join_knock_room_when_invited(rv: RoomVersion) -> None:
    room = standard_room(rv, join_rule="knock")
    assert not room.allowed(room.member(CAROL, "join"))
    room.set_member(CAROL, "invite")
    # Before v7 "knock" is an unknown join rule, so nobody can join.
    assert room.allowed(room.member(CAROL, "join")) is rv.knock_join_rule


# --------------------------------------------------------------------------------------
# Restricted joins (v8+) and knock_restricted (v10+)
# --------------------------------------------------------------------------------------


def authorised(user: str) -> dict[str, str]:
    return {"join_authorised_via_users_server": user}


@pytest.mark.parametrize(
    ("join_rule", "before", "content", "minimum_version"),
    [
        ("restricted", None, authorised(ALICE), 8),
        ("restricted", None, authorised(BOB), 8),  # invite level is 0
        ("restricted", "invite", {}, 8),
        ("restricted", "leave", authorised(MOD), 8),
        ("restricted", None, {}, None),
        ("restricted", None, authorised(CAROL), None),  # authoriser not in the room
        ("restricted", None, authorised(EVE), None),  # authoriser banned
        ("restricted", None, authorised("@dave:d.test"), None),
        ("restricted", "ban", authorised(ALICE), None),
        ("knock_restricted", None, authorised(ALICE), 10),
        ("knock_restricted", "invite", {}, 10),
        ("knock_restricted", None, {}, None),
    ],
)
@pytest.mark.parametrize("rv", versions())
def test_restricted_join(
    rv: RoomVersion,
    join_rule: str,
    before: str | None,
    content: dict[str, str],
    minimum_version: int | None,
) -> None:
    room = standard_room(rv, join_rule=join_rule)
    room.set_member(CAROL, before)
    expected = minimum_version is not None and int(rv.identifier) >= minimum_version
    assert room.allowed(room.member(CAROL, "join", **content)) is expected


@pytest.mark.parametrize("rv", versions(lambda rv: rv.restricted_join_rule))
def test_restricted_join_authoriser_must_reach_invite_level(rv: RoomVersion) -> None:
    room = standard_room(rv, join_rule="restricted")
    room.add(room.power_levels(ALICE, room.default_power_levels() | {"invite": 50}))
    assert not room.allowed(room.member(CAROL, "join", **authorised(BOB)))
    assert room.allowed(room.member(CAROL, "join", **authorised(MOD)))


@pytest.mark.parametrize("rv", versions(lambda rv: rv.restricted_join_rule))
def test_restricted_join_authoriser_invited_but_not_joined(rv: RoomVersion) -> None:
    room = standard_room(rv, join_rule="restricted")
    room.set_member("@dave:d.test", "invite")
    assert not room.allowed(room.member(CAROL, "join", **authorised("@dave:d.test")))


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
    # No power levels event: state_default is 0, everybody may set state.
    assert room.allowed(room.state_event("m.room.topic", "", BOB, {"topic": "x"}))
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


# --------------------------------------------------------------------------------------
# Power levels
# --------------------------------------------------------------------------------------


DELETE = object()


def changed(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `base` power levels with one key (`ban`, `users.<id>`, `events.<type>`)
    set to `value`, or deleted for DELETE."""
    content = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    target = content
    leaf = path
    for nested in ("users", "events"):
        if path.startswith(nested + "."):
            target, leaf = content.setdefault(nested, {}), path[len(nested) + 1 :]
    if value is DELETE:
        target.pop(leaf, None)
    else:
        target[leaf] = value
    return content


# (sender, path, new value, allowed) - the current levels are Room.default_power_levels():
# mod and mod2 at 50, bob at 0 (users_default), ban/kick/redact/state_default 50,
# invite/events_default 0, events m.room.name 50 and m.room.power_levels 100.
POWER_LEVEL_CHANGES = [
    (ALICE, "users.@bob:b.test", 100, True),  # up to alice's own level (v12: infinite)
    (ALICE, "users.@mod:b.test", DELETE, True),  # alice demotes a moderator
    (ALICE, "users.@mod:b.test", 0, True),
    (ALICE, "ban", 100, True),
    (ALICE, "events.m.room.power_levels", 50, True),
    # Sending m.room.power_levels needs 100 here: nobody else may change anything.
    (MOD, "users.@bob:b.test", 50, False),
    (MOD, "users.@mod:b.test", 40, False),
    (MOD, "ban", 40, False),
    (BOB, "users.@bob:b.test", 1, False),
]

# The same changes by a sender allowed to send m.room.power_levels at all.
POWER_LEVEL_CHANGES_EVENTS_OPEN = [
    (MOD, "users.@bob:b.test", 50, True),
    (MOD, "users.@bob:b.test", 51, False),
    (MOD, "users.@mod:b.test", 40, True),
    (MOD, "users.@mod:b.test", 60, False),
    (MOD, "users.@mod2:b.test", 0, False),
    (MOD, "users.@mod2:b.test", 49, False),
    (MOD, "users.@new:b.test", 50, True),
    (MOD, "users.@new:b.test", 99, False),
    (MOD, "ban", 40, True),  # current 50 <= 50, new 40 <= 50
    (MOD, "ban", 51, False),
    (MOD, "ban", DELETE, True),
    (MOD, "kick", 60, False),
    (MOD, "state_default", 100, False),
    (MOD, "users_default", 50, True),
    (MOD, "users_default", 51, False),
    (MOD, "events.m.room.power_levels", 50, True),  # current 0
    (MOD, "events.m.room.topic", 50, True),
    (MOD, "events.m.room.topic", 51, False),
    (MOD, "events.m.room.name", DELETE, True),
    (MOD, "events.m.room.name", 10, True),
    (MOD, "events.m.room.guarded", DELETE, False),  # current value 75 > 50
    (MOD, "events.m.room.guarded", 10, False),
    (BOB, "users.@bob:b.test", 1, False),
    (BOB, "users_default", 0, True),  # no change at all
]


@pytest.mark.parametrize(("sender", "path", "value", "expected"), POWER_LEVEL_CHANGES)
@pytest.mark.parametrize("rv", versions())
def test_power_level_changes(
    rv: RoomVersion, sender: str, path: str, value: Any, expected: bool
) -> None:
    room = standard_room(rv)
    event = room.power_levels(sender, changed(room.default_power_levels(), path, value))
    assert room.allowed(event) is expected


@pytest.mark.parametrize(("sender", "path", "value", "expected"), POWER_LEVEL_CHANGES_EVENTS_OPEN)
@pytest.mark.parametrize("rv", versions())
def test_power_level_changes_when_anyone_may_send_them(
    rv: RoomVersion, sender: str, path: str, value: Any, expected: bool
) -> None:
    room = standard_room(rv)
    base = room.default_power_levels()
    base["events"] = {"m.room.name": 50, "m.room.power_levels": 0, "m.room.guarded": 75}
    room.add(room.power_levels(ALICE, base))
    assert room.allowed(room.power_levels(sender, changed(base, path, value))) is expected


@pytest.mark.parametrize("rv", versions())
def test_first_power_levels_event_is_allowed(rv: RoomVersion) -> None:
    """Without a previous PL event only the shape is checked (state_default is 0)."""
    room = standard_room(rv, with_power_levels=False)
    assert room.allowed(room.power_levels(BOB, {"users": {BOB: 100}}))
    assert not room.allowed(room.power_levels(BOB, {"users": {"bob": 100}}))
    assert not room.allowed(room.power_levels(CAROL, {"users": {CAROL: 100}}))  # not joined


@pytest.mark.parametrize("rv", versions())
def test_notifications_changes_checked_from_v6(rv: RoomVersion) -> None:
    room = standard_room(rv)
    levels = room.default_power_levels() | {"notifications": {"room": 50}}
    levels["events"] = {"m.room.power_levels": 0}
    room.add(room.power_levels(ALICE, levels))
    raised = levels | {"notifications": {"room": 60}}
    assert room.allowed(room.power_levels(MOD, raised)) is not rv.limit_notifications_power_levels
    lowered = levels | {"notifications": {"room": 20}}
    assert room.allowed(room.power_levels(MOD, lowered))


@pytest.mark.parametrize(
    ("path", "value", "allowed_in"),
    [
        # allowed_in: which versions accept the value ("all", "v1-9", "v1-5", "none").
        ("ban", 40, "all"),
        ("ban", "40", "v1-9"),
        ("ban", " +040 ", "v1-9"),
        ("ban", "-5", "v1-9"),
        ("ban", "4 0", "none"),
        ("ban", "1_0", "none"),
        ("ban", "40.0", "none"),
        ("ban", "", "none"),
        ("ban", 40.7, "v1-5"),  # floats truncate in v1-5; strict canonical JSON from v6
        ("ban", True, "none"),
        ("ban", None, "none"),
        ("ban", [40], "none"),
        ("users.@bob:b.test", "10", "v1-9"),
        ("users.@bob:b.test", 10.5, "v1-5"),
        ("users.@bob:b.test", {"x": 1}, "none"),
        ("users.not-a-user", 10, "none"),
        ("users.@nolocal", 10, "none"),
        ("events.m.room.topic", "10", "v1-9"),
        ("events.m.room.topic", "ten", "none"),
        ("events_default", "0", "v1-9"),
    ],
)
@pytest.mark.parametrize("rv", versions())
def test_power_level_value_formats(rv: RoomVersion, path: str, value: Any, allowed_in: str) -> None:
    room = standard_room(rv)
    event = room.power_levels(ALICE, changed(room.default_power_levels(), path, value))
    n = int(rv.identifier)
    expected = {
        "all": True,
        "v1-9": n <= 9,
        "v1-5": n <= 5,
        "none": False,
    }[allowed_in]
    assert room.allowed(event) is expected


@pytest.mark.parametrize("rv", versions())
def test_power_level_events_and_users_must_be_objects(rv: RoomVersion) -> None:
    room = standard_room(rv)
    for key in ("users", "events"):
        content = room.default_power_levels() | {key: [1]}
        assert not room.allowed(room.power_levels(ALICE, content))
    content = room.default_power_levels() | {"notifications": "room"}
    assert (
        room.allowed(room.power_levels(ALICE, content)) is not rv.limit_notifications_power_levels
    )


@pytest.mark.parametrize("rv", versions(lambda rv: not rv.integer_power_levels))
def test_stringy_levels_compare_by_value(rv: RoomVersion) -> None:
    """ "50" and 50 are the same level: rewriting one as the other is no change."""
    room = standard_room(rv)
    levels = room.default_power_levels()
    levels["events"] = {"m.room.power_levels": 0}
    levels["users"] = {**levels["users"], MOD2: "50"}
    room.add(room.power_levels(ALICE, levels))
    assert room.allowed(room.power_levels(MOD, levels | {"users": {**levels["users"], MOD2: 50}}))
    assert not room.allowed(
        room.power_levels(MOD, levels | {"users": {**levels["users"], MOD2: 0}})
    )
    assert room.allowed(room.power_levels(MOD, levels | {"kick": "0050"}))


# --------------------------------------------------------------------------------------
# v12 room creators
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("rv", versions(lambda rv: rv.implicit_room_creator))
def test_creator_in_users(rv: RoomVersion) -> None:
    room = standard_room(rv)
    content = room.default_power_levels()
    content["users"] = {**content["users"], ALICE: 100}
    # v11: ordinary; v12: creators may never be listed.
    assert room.allowed(room.power_levels(ALICE, content)) is not rv.privileged_creators


@pytest.mark.parametrize("rv", versions(lambda rv: rv.implicit_room_creator))
def test_additional_creators(rv: RoomVersion) -> None:
    room = standard_room(rv, create_content={"additional_creators": [CAROL]})
    room.set_member(CAROL, "join")
    admin = "@admin:b.test"
    content = room.default_power_levels()
    content["users"] = {**content["users"], admin: 100}
    content["events"] = {"m.room.power_levels": 100}
    room.add(room.power_levels(ALICE, content))
    room.set_member(admin, "join")
    privileged = rv.privileged_creators

    assert get_power_level(CAROL, room.state[("m.room.power_levels", "")], room.create) == (
        math.inf if privileged else 0
    )
    # The additional creator outranks an admin at 100 in v12 only.
    assert room.allowed(room.member(admin, "ban", sender=CAROL)) is privileged
    assert room.allowed(room.power_levels(CAROL, content | {"ban": 99})) is privileged
    # An additional creator may not be listed in users.
    with_carol = content | {"users": {**content["users"], CAROL: 100}}
    assert room.allowed(room.power_levels(ALICE, with_carol)) is not privileged
    # An admin cannot demote (or kick/ban) a creator.
    demote = content | {"users": {**content["users"], ALICE: 0}}
    assert not room.allowed(room.power_levels(admin, demote))
    assert not room.allowed(room.member(ALICE, "ban", sender=admin))
    assert room.allowed(room.member(CAROL, "leave", sender=admin)) is not privileged


@pytest.mark.parametrize("rv", versions())
def test_get_power_level_defaults(rv: RoomVersion) -> None:
    room = Room(rv, with_power_levels=False)
    creator_level = math.inf if rv.privileged_creators else 100
    assert get_power_level(ALICE, None, room.create) == creator_level
    assert get_power_level(BOB, None, room.create) == 0
    pl = room.power_levels(ALICE, {"users": {BOB: 20}, "users_default": 5})
    assert get_power_level(BOB, pl, room.create) == 20
    assert get_power_level(CAROL, pl, room.create) == 5
    assert get_power_level(ALICE, pl, room.create) == (math.inf if rv.privileged_creators else 5)


@pytest.mark.parametrize(
    ("value", "v1_5", "v6_9", "v10_plus"),
    [
        (7, 7, 7, 7),
        (-3, -3, -3, -3),
        ("7", 7, 7, None),
        ("  -007 ", -7, -7, None),
        ("+7", 7, 7, None),
        ("7.0", None, None, None),
        ("٧", None, None, None),  # non-ASCII digits are not allowed
        (7.9, 7, None, None),
        (-7.9, -7, None, None),
        (float("inf"), None, None, None),
        (float("nan"), None, None, None),
        (True, None, None, None),
        (None, None, None, None),
    ],
)
def test_parse_power_level(value: Any, v1_5: Any, v6_9: Any, v10_plus: Any) -> None:
    for rv in ALL_VERSIONS:
        n = int(rv.identifier)
        expected = v1_5 if n <= 5 else v6_9 if n <= 9 else v10_plus
        assert parse_power_level(value, rv) == expected, rv.identifier


# --------------------------------------------------------------------------------------
# Auth events selection
# --------------------------------------------------------------------------------------

CREATE_K = ("m.room.create", "")
PL_K = ("m.room.power_levels", "")
JR_K = ("m.room.join_rules", "")


def with_create(rv: RoomVersion, keys: set) -> set:
    return keys if rv.room_id_is_create_event_id else keys | {CREATE_K}


@pytest.mark.parametrize("rv", versions())
def test_auth_types_for_event(rv: RoomVersion) -> None:
    def types(event_type: str, sender: str, state_key: str | None, content: dict) -> set:
        return auth_types_for_event(rv, event_type, sender, state_key, content)

    assert types("m.room.create", ALICE, "", {}) == set()
    assert types("m.room.message", BOB, None, {}) == with_create(rv, {PL_K, ("m.room.member", BOB)})
    assert types("m.room.topic", BOB, "", {}) == with_create(rv, {PL_K, ("m.room.member", BOB)})
    base = {PL_K, ("m.room.member", ALICE), ("m.room.member", BOB)}
    assert types("m.room.member", ALICE, BOB, {"membership": "ban"}) == with_create(rv, base)
    assert types("m.room.member", ALICE, BOB, {"membership": "leave"}) == with_create(rv, base)
    for membership in ("join", "invite", "knock"):
        assert types("m.room.member", ALICE, BOB, {"membership": membership}) == with_create(
            rv, base | {JR_K}
        )
    tpi = {"membership": "invite", "third_party_invite": {"signed": {"token": "tok"}}}
    assert types("m.room.member", ALICE, BOB, tpi) == with_create(
        rv, base | {JR_K, ("m.room.third_party_invite", "tok")}
    )
    restricted = {"membership": "join", "join_authorised_via_users_server": MOD}
    expected = {PL_K, JR_K, ("m.room.member", BOB)}
    if rv.restricted_join_rule:
        expected.add(("m.room.member", MOD))
    assert types("m.room.member", BOB, BOB, restricted) == with_create(rv, expected)
    # The authoriser only counts for joins.
    leave = {"membership": "leave", "join_authorised_via_users_server": MOD}
    assert types("m.room.member", BOB, BOB, leave) == with_create(
        rv, {PL_K, ("m.room.member", BOB)}
    )


def listing(room: Room, event: Event, auth_events: list[Event]) -> Event:
    """`event` re-made so that its PDU lists exactly `auth_events`."""
    event.pdu["auth_events"] = [e.event_id for e in auth_events]
    return event


def selection_ok(event: Event, auth_events: list[Event]) -> bool:
    try:
        check_auth_events_selection(event, auth_events)
    except AuthError:
        return False
    return True


@pytest.mark.parametrize("rv", versions())
def test_check_auth_events_selection(rv: RoomVersion) -> None:
    room = standard_room(rv)
    create = room.create
    pl = room.state[PL_K]
    bob = room.state[("m.room.member", BOB)]
    join_rules = room.state[JR_K]
    message = room.event("m.room.message", BOB, {})

    good = [pl, bob] if rv.room_id_is_create_event_id else [create, pl, bob]
    assert selection_ok(listing(room, message, good), good)
    # Fewer than the whole selection is fine (e.g. no PL event yet) ...
    minimal = [] if rv.room_id_is_create_event_id else [create]
    assert selection_ok(listing(room, message, minimal), minimal)
    # ... but v1-11 must cite the create event and v12 must not.
    with_create_listed = [pl, bob, create]
    assert selection_ok(listing(room, message, with_create_listed), with_create_listed) is (
        not rv.room_id_is_create_event_id
    )
    assert selection_ok(listing(room, message, [pl, bob]), [pl, bob]) is (
        rv.room_id_is_create_event_id
    )
    # Outside the selection: join rules for a message.
    extra = good + [join_rules]
    assert not selection_ok(listing(room, message, extra), extra)
    # Duplicate (type, state_key).
    old_pl = room.power_levels(ALICE, room.default_power_levels())
    dup = good + [old_pl]
    assert not selection_ok(listing(room, message, dup), dup)
    # The same ID twice.
    message.pdu["auth_events"] = [e.event_id for e in good] + [pl.event_id]
    assert not selection_ok(message, good)
    # Not listed by the event.
    listing(room, message, good[:-1])
    assert not selection_ok(message, good)
    # A message event is never an auth event.
    chat = room.event("m.room.message", BOB, {})
    assert not selection_ok(listing(room, message, good + [chat]), good + [chat])
    # Rejected auth event.
    listing(room, message, good)
    pl.rejected_reason = "auth"
    assert not selection_ok(message, good)
    pl.rejected_reason = None
    # Another room's event.
    foreign_bob = room.member(BOB, "join")
    foreign_bob.pdu["room_id"] = "!elsewhere:a.test"
    foreign_bob = Event(foreign_bob.pdu, rv, event_id="$foreign:b.test")
    mixed = [e for e in good if e is not bob] + [foreign_bob]
    assert not selection_ok(listing(room, message, mixed), mixed)


@pytest.mark.parametrize("rv", versions())
def test_check_auth_events_selection_create_event(rv: RoomVersion) -> None:
    assert selection_ok(create_event(rv), [])
    other = create_event(rv, auth_events=["$x:a.test"])
    assert not selection_ok(other, [])


@pytest.mark.parametrize("rv", versions())
def test_check_auth_events_selection_for_a_join(rv: RoomVersion) -> None:
    room = standard_room(rv, join_rule="restricted")
    mod = room.state[("m.room.member", MOD)]
    base = [room.state[PL_K], room.state[JR_K]]
    if not rv.room_id_is_create_event_id:
        base.append(room.create)
    join = room.member(CAROL, "join", **authorised(MOD))
    assert selection_ok(listing(room, join, base + [mod]), base + [mod]) is rv.restricted_join_rule
    assert selection_ok(listing(room, join, base), base)


def test_required_signature_servers() -> None:
    v1, v3, v8 = (KNOWN_ROOM_VERSIONS[v] for v in ("1", "3", "8"))
    room1, room3, room8 = Room(v1), Room(v3), Room(v8)
    message = room1.event("m.room.message", BOB, {})
    message.event_id = "$x:other.test"
    assert required_signature_servers(message) == {"b.test", "other.test"}
    assert required_signature_servers(room3.event("m.room.message", BOB, {})) == {"b.test"}
    join8 = room8.member(BOB, "join", **authorised(CAROL))
    assert required_signature_servers(join8) == {"b.test", "c.test"}
    join3 = room3.member(BOB, "join", **authorised(CAROL))
    assert required_signature_servers(join3) == {"b.test"}
