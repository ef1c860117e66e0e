"""Authorisation rules: create events, membership transitions, knocks, restricted joins.

See auth_rules_kit.py for how the rooms are built.
"""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.events.event import Event
from homeserver.events.room_versions import RoomVersion
from homeserver.graph.auth_rules import AuthError, check_auth_rules
from tests.unit.auth_rules_kit import (
    ALICE,
    BOB,
    CAROL,
    EVE,
    MOD,
    MOD2,
    Room,
    authorised,
    create_event,
    standard_room,
    versions,
)

# --------------------------------------------------------------------------------------
# m.room.create
# --------------------------------------------------------------------------------------


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
