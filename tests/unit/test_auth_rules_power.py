"""Authorisation rules: power levels (changes, value formats, creators, defaults).

See auth_rules_kit.py for how the rooms are built.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from homeserver.events.room_versions import RoomVersion
from homeserver.graph.power_levels import get_power_level, parse_power_level
from tests.unit.auth_rules_kit import (
    ALICE,
    ALL_VERSIONS,
    BOB,
    CAROL,
    MOD,
    MOD2,
    Room,
    standard_room,
    versions,
)

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
    """Without a previous PL event the shape is checked and the sender must reach
    state_default, which Synapse takes as 50 there too: only the creator qualifies."""
    room = standard_room(rv, with_power_levels=False)
    assert room.allowed(room.power_levels(ALICE, {"users": {BOB: 50}}))
    assert not room.allowed(room.power_levels(ALICE, {"users": {"bob": 50}}))
    assert not room.allowed(room.power_levels(BOB, {"users": {BOB: 100}}))  # below 50
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
