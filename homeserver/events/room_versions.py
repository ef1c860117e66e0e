"""Room versions 1–12 as one table of rules.

Every rule that differs between versions is a field here, so auth rules, redaction,
hashing and state resolution ask the version rather than compare version strings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum


class EventIdFormat(IntEnum):
    V1 = 1  # `$opaque:server`, sent in the event (v1, v2)
    V3 = 3  # `$` + standard unpadded base64 of the reference hash (v3)
    V4 = 4  # `$` + URL-safe unpadded base64 of the reference hash (v4+)


class StateResAlgorithm(IntEnum):
    V1 = 1
    V2 = 2
    V2_1 = 3  # room v12: empty starting state for iterative auth, conflicted subgraph


@dataclass(frozen=True)
class RoomVersion:
    identifier: str
    event_id_format: EventIdFormat
    state_res: StateResAlgorithm
    # v1 redaction base; 6: aliases no longer special; 8: join_rules `allow`;
    # 9: member `join_authorised_via_users_server`; 11: the v11 redaction rules.
    redaction_rules: int
    # v5+: a signing key must be valid at the event's origin_server_ts.
    enforce_key_validity: bool
    # v1–5: m.room.aliases authorised by sender's server only.
    special_case_aliases_auth: bool
    # v6+: integers in ±(2^53-1), no floats, in events.
    strict_canonical_json: bool
    # v6+: `notifications` keys in power levels are checked like the others.
    limit_notifications_power_levels: bool
    knock_join_rule: bool  # v7+
    restricted_join_rule: bool  # v8+
    knock_restricted_join_rule: bool  # v10+
    integer_power_levels: bool  # v10+: power level values must be integers
    # v11+: the creator is the create event's sender; no `creator` content key.
    implicit_room_creator: bool
    # v12: room ID is `!` + the create event's reference hash; the create event has no
    # room_id and is never listed in auth_events; creators have infinite power.
    room_id_is_create_event_id: bool
    privileged_creators: bool

    @property
    def event_id_in_event(self) -> bool:
        return self.event_id_format == EventIdFormat.V1


_V1 = RoomVersion(
    identifier="1",
    event_id_format=EventIdFormat.V1,
    state_res=StateResAlgorithm.V1,
    redaction_rules=1,
    enforce_key_validity=False,
    special_case_aliases_auth=True,
    strict_canonical_json=False,
    limit_notifications_power_levels=False,
    knock_join_rule=False,
    restricted_join_rule=False,
    knock_restricted_join_rule=False,
    integer_power_levels=False,
    implicit_room_creator=False,
    room_id_is_create_event_id=False,
    privileged_creators=False,
)
_V2 = replace(_V1, identifier="2", state_res=StateResAlgorithm.V2)
_V3 = replace(_V2, identifier="3", event_id_format=EventIdFormat.V3)
_V4 = replace(_V3, identifier="4", event_id_format=EventIdFormat.V4)
_V5 = replace(_V4, identifier="5", enforce_key_validity=True)
_V6 = replace(
    _V5,
    identifier="6",
    redaction_rules=6,
    special_case_aliases_auth=False,
    strict_canonical_json=True,
    limit_notifications_power_levels=True,
)
_V7 = replace(_V6, identifier="7", knock_join_rule=True)
_V8 = replace(_V7, identifier="8", redaction_rules=8, restricted_join_rule=True)
_V9 = replace(_V8, identifier="9", redaction_rules=9)
_V10 = replace(_V9, identifier="10", knock_restricted_join_rule=True, integer_power_levels=True)
_V11 = replace(_V10, identifier="11", redaction_rules=11, implicit_room_creator=True)
_V12 = replace(
    _V11,
    identifier="12",
    state_res=StateResAlgorithm.V2_1,
    room_id_is_create_event_id=True,
    privileged_creators=True,
)

KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {
    v.identifier: v for v in (_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9, _V10, _V11, _V12)
}

DEFAULT_ROOM_VERSION = "12"


def get_room_version(identifier: str) -> RoomVersion:
    """Look up a room version; raise KeyError for one we do not support."""
    return KNOWN_ROOM_VERSIONS[identifier]
