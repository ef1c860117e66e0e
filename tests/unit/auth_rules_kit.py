"""Shared building blocks for the table-driven auth rule tests (test_auth_rules*.py).

Each case builds a small room (create, creator's join, power levels, join rules, and
whatever members the case needs) as plain PDU dicts, then asserts the exact allow/deny
of one new event checked against that state.
"""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.events.event import Event
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from homeserver.graph.auth_rules import (
    AuthError,
    check_auth_rules,
)

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


def authorised(user: str) -> dict[str, str]:
    return {"join_authorised_via_users_server": user}
