"""Synapse's keys for the rooms every new user joins: `auto_join_rooms`,
`autocreate_auto_join_rooms`, `autocreate_auto_join_rooms_federated`,
`autocreate_auto_join_room_preset`, `auto_join_mxid_localpart`,
`auto_join_rooms_for_guests` (homeserver/accounts/auto_join.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeserver.config.accounts_model import AutoJoinConfig
from homeserver.config.reader import Reader
from homeserver.ids import check_new_localpart, validate_room_alias

AUTO_JOIN_KEYS = (
    "auto_join_rooms",
    "autocreate_auto_join_rooms",
    "autocreate_auto_join_rooms_federated",
    "autocreate_auto_join_room_preset",
    "auto_join_mxid_localpart",
    "auto_join_rooms_for_guests",
)
_PRESETS = ("public_chat", "private_chat", "trusted_private_chat")


def read_auto_join(r: Reader, top: Mapping[str, Any]) -> AutoJoinConfig:
    rooms = r.str_list(top, "auto_join_rooms", "") or []
    for room in rooms:
        if room.startswith("!") and ":" in room:
            continue
        try:
            validate_room_alias(room)
        except ValueError as exc:
            r.problem("auto_join_rooms", f"{room!r} is not a room alias or ID: {exc}")
    preset = r.str(top, "autocreate_auto_join_room_preset", "", "public_chat")
    if preset not in _PRESETS:
        r.problem("autocreate_auto_join_room_preset", f"one of {', '.join(_PRESETS)}")
    creator = r.str(top, "auto_join_mxid_localpart", "")
    if creator is not None:
        try:
            check_new_localpart(creator)
        except ValueError as exc:
            r.problem("auto_join_mxid_localpart", str(exc))
    if preset != "public_chat" and creator is None and rooms:
        r.problem(
            "autocreate_auto_join_room_preset",
            "a private preset needs auto_join_mxid_localpart (the user who invites)",
        )
    return AutoJoinConfig(
        rooms=tuple(rooms),
        autocreate=r.bool(top, "autocreate_auto_join_rooms", "", True),
        federated=r.bool(top, "autocreate_auto_join_rooms_federated", "", True),
        preset=preset,
        creator_localpart=creator,
        for_guests=r.bool(top, "auto_join_rooms_for_guests", "", True),
    )
