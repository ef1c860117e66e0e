"""The redaction algorithm, per room version (rooms/v1 … v11 "Redactions").

Redaction is also the first step of the reference hash and of event signing, so it must
match other servers byte for byte.
"""

from __future__ import annotations

from typing import Any

from .room_versions import RoomVersion

_TOP_LEVEL_V1 = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "prev_state",
        "auth_events",
        "origin",
        "origin_server_ts",
        "membership",
    }
)
_TOP_LEVEL_V11 = _TOP_LEVEL_V1 - {"origin", "membership", "prev_state"}

_POWER_LEVEL_KEYS = (
    "ban",
    "events",
    "events_default",
    "kick",
    "redact",
    "state_default",
    "users",
    "users_default",
)


def _kept_content(event_type: str, content: dict[str, Any], rules: int) -> dict[str, Any]:
    keep: tuple[str, ...] = ()
    if event_type == "m.room.member":
        keep = ("membership",)
        if rules >= 9:
            keep += ("join_authorised_via_users_server",)
        if rules >= 11:
            kept = {k: content[k] for k in keep if k in content}
            tpi = content.get("third_party_invite")
            if isinstance(tpi, dict) and "signed" in tpi:
                kept["third_party_invite"] = {"signed": tpi["signed"]}
            return kept
    elif event_type == "m.room.create":
        if rules >= 11:
            return dict(content)
        keep = ("creator",)
    elif event_type == "m.room.join_rules":
        keep = ("join_rule", "allow") if rules >= 8 else ("join_rule",)
    elif event_type == "m.room.power_levels":
        keep = _POWER_LEVEL_KEYS + (("invite",) if rules >= 11 else ())
    elif event_type == "m.room.aliases":
        keep = ("aliases",) if rules < 6 else ()
    elif event_type == "m.room.history_visibility":
        keep = ("history_visibility",)
    elif event_type == "m.room.redaction":
        keep = ("redacts",) if rules >= 11 else ()
    return {k: content[k] for k in keep if k in content}


def redact(event: dict[str, Any], room_version: RoomVersion) -> dict[str, Any]:
    """Return a redacted copy of a PDU (or client event) dict; the input is untouched."""
    rules = room_version.redaction_rules
    allowed = _TOP_LEVEL_V11 if rules >= 11 else _TOP_LEVEL_V1
    redacted = {k: v for k, v in event.items() if k in allowed}
    content = event.get("content")
    redacted["content"] = (
        _kept_content(str(event.get("type", "")), content, rules)
        if isinstance(content, dict)
        else {}
    )
    return redacted
