"""The Matrix authorisation rules for room versions 1-12.

Pure functions over `Event`s: no storage, no network. The caller chooses which state an
event is checked against (its auth events, the state before it, the current state);
this module only answers "allowed or not, and if not, which rule said no".

Every difference between room versions is read from a `RoomVersion` flag:

* `special_case_aliases_auth` (v1-5): m.room.aliases is authorised by server name only;
* `event_id_in_event` (v1-2): the redaction rule (redact level, or same event ID domain)
  - the only versions whose event IDs have a domain to compare;
* `limit_notifications_power_levels` (v6+): `notifications` changes are checked;
* `knock_join_rule` (v7+), `restricted_join_rule` (v8+), `knock_restricted_join_rule`
  (v10+): the extra join rules and the `knock` membership;
* `integer_power_levels` (v10+): power level values must be JSON integers;
* `implicit_room_creator` (v11+): the creator is the create event's sender;
* `room_id_is_create_event_id` (v12): the create event has no room_id and is never an
  auth event; `privileged_creators` (v12): creators (sender plus
  `additional_creators`) have infinite power and may not appear in `users`.

Rule numbers in messages follow the v12 text (spec content/rooms/v12.md); earlier
versions number the same rules differently.

Signatures are not checked here except for third-party invites (whose keys are in room
state). `required_signature_servers` says which servers must have signed an event; the
federation layer verifies those before the event reaches these rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..events.event import Event, StateKey
from ..events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from ..ids import is_valid_user_id, server_of
from .power_levels import (
    LEVEL_KEYS,
    PowerLevel,
    PowerLevels,
    get_power_level,
    get_required_level,
    parse_power_level,
    room_creators,
)
from .third_party_invite import signed_block_is_valid, third_party_invite_public_keys

CREATE = "m.room.create"
MEMBER = "m.room.member"
POWER_LEVELS = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
THIRD_PARTY_INVITE = "m.room.third_party_invite"
ALIASES = "m.room.aliases"
REDACTION = "m.room.redaction"

CREATE_KEY: StateKey = (CREATE, "")
POWER_LEVELS_KEY: StateKey = (POWER_LEVELS, "")
JOIN_RULES_KEY: StateKey = (JOIN_RULES, "")

AUTHORISER_KEY = "join_authorised_via_users_server"


class AuthError(Exception):
    """An event is not allowed; the message names the rule that refused it."""


# --------------------------------------------------------------------------------------
# Auth events selection (server-server API, "Auth events selection")
# --------------------------------------------------------------------------------------


def auth_types_for_event(
    room_version: RoomVersion,
    event_type: str,
    sender: str,
    state_key: str | None,
    content: Mapping[str, Any],
) -> set[StateKey]:
    """The (type, state_key) pairs an event's auth_events may be chosen from.

    Used both to build auth_events for events we create (pick whichever of these exist
    in the current state) and to check that a received event cites nothing else.
    """
    if event_type == CREATE and state_key == "":
        return set()
    keys: set[StateKey] = {POWER_LEVELS_KEY, (MEMBER, sender)}
    if not room_version.room_id_is_create_event_id:
        keys.add(CREATE_KEY)
    if event_type == MEMBER and state_key is not None:
        keys.add((MEMBER, state_key))
        membership = content.get("membership")
        if membership in ("join", "invite", "knock"):
            keys.add(JOIN_RULES_KEY)
        if membership == "invite":
            token = _third_party_invite_token(content)
            if token is not None:
                keys.add((THIRD_PARTY_INVITE, token))
        if membership == "join" and room_version.restricted_join_rule:
            authoriser = content.get(AUTHORISER_KEY)
            if isinstance(authoriser, str):
                keys.add((MEMBER, authoriser))
    return keys


def _third_party_invite_token(content: Mapping[str, Any]) -> str | None:
    tpi = content.get("third_party_invite")
    signed = tpi.get("signed") if isinstance(tpi, dict) else None
    token = signed.get("token") if isinstance(signed, dict) else None
    return token if isinstance(token, str) else None


def check_auth_events_selection(event: Event, auth_events: Iterable[Event]) -> None:
    """The checks on the auth_events an event lists (v12 rule 3, v1-11 rule 2).

    `auth_events` are the fetched events the PDU lists. Raise AuthError if any is
    cited twice by (type, state_key), is outside the selection, was rejected, or is in
    another room; and if the create event is missing (v1-11) or present (v12).
    Whether every listed ID could be fetched is the caller's concern.
    """
    auth_events = list(auth_events)
    if event.is_create():
        if auth_events or event.auth_event_ids:
            raise AuthError("create event: must have no auth_events")
        return
    rv = event.room_version
    listed = event.auth_event_ids
    if len(set(listed)) != len(listed):
        raise AuthError("auth events: an event is listed twice")
    allowed = auth_types_for_event(rv, event.type, event.sender, event.state_key, event.content)
    seen: set[StateKey] = set()
    for auth_event in auth_events:
        if auth_event.event_id not in listed:
            raise AuthError(f"auth events: {auth_event.event_id} is not in the event's auth_events")
        if not auth_event.is_state():
            raise AuthError(f"auth events: {auth_event.event_id} is not a state event")
        key = auth_event.state_tuple
        if key in seen:
            raise AuthError(f"auth events: duplicate entry for {key}")
        seen.add(key)
        if key == CREATE_KEY and rv.room_id_is_create_event_id:
            raise AuthError("auth events: the create event must not be listed in this room version")
        if key not in allowed:
            raise AuthError(f"auth events: {key} is not in the auth events selection")
        if auth_event.rejected_reason is not None:
            raise AuthError(f"auth events: {auth_event.event_id} was rejected")
        if auth_event.room_id != event.room_id:
            raise AuthError(f"auth events: {auth_event.event_id} is in another room")
    if not rv.room_id_is_create_event_id and CREATE_KEY not in seen:
        raise AuthError("auth events: no m.room.create event")


# --------------------------------------------------------------------------------------
# The rules
# --------------------------------------------------------------------------------------


def check_auth_rules(event: Event, auth_state: Mapping[StateKey, Event]) -> None:
    """Raise AuthError unless `event` is allowed by the rules given `auth_state`.

    `auth_state` is the state to check against, keyed by (type, state_key): the event's
    auth events, or the room state before it. It must contain the create event under
    ("m.room.create", "") in every room version (in v12 the caller adds it, since it is
    not an auth event there). The auth_events selection checks are separate:
    `check_auth_events_selection`.
    """
    if event.is_create():
        _check_create(event)
        return

    create = auth_state.get(CREATE_KEY)
    _check_room_matches_create(event, create)
    assert create is not None
    rv = event.room_version

    if create.content.get("m.federate", True) is False and server_of(event.sender) != server_of(
        create.sender
    ):
        raise AuthError("m.federate is false and the sender is on another server")

    if rv.special_case_aliases_auth and event.type == ALIASES:
        if not event.is_state():
            raise AuthError("m.room.aliases: no state_key")
        if event.state_key != server_of(event.sender):
            raise AuthError("m.room.aliases: state_key is not the sender's server")
        return

    power = PowerLevels(auth_state.get(POWER_LEVELS_KEY), create)

    if event.type == MEMBER:
        _check_membership(event, auth_state, power, create)
        return

    sender_level = power.user_level(event.sender)
    if _membership(auth_state, event.sender) != "join":
        raise AuthError(f"{event.sender} is not joined to the room")

    if event.type == THIRD_PARTY_INVITE:
        if sender_level < power.invite:
            raise AuthError("m.room.third_party_invite: sender is below the invite level")
        return

    if power.event_level(event.type, event.is_state()) > sender_level:
        raise AuthError(f"{event.sender} may not send {event.type}: power level too low")

    state_key = event.state_key
    if isinstance(state_key, str) and state_key.startswith("@") and state_key != event.sender:
        raise AuthError("state_key starts with '@' but is not the sender")

    if event.type == POWER_LEVELS and event.state_key == "":
        _check_power_levels(event, auth_state.get(POWER_LEVELS_KEY), create, sender_level)
        return

    if event.type == REDACTION and rv.event_id_in_event:
        # v1-2 only: there, event IDs carry the origin's domain.
        if sender_level >= power.redact:
            return
        target = event.redacts
        if target is not None and server_of(target) == server_of(event.event_id):
            return
        raise AuthError("m.room.redaction: below the redact level and not the same server")


def _check_create(event: Event) -> None:
    """Rule 1: the create event."""
    rv = event.room_version
    if event.pdu.get("prev_events"):
        raise AuthError("create event: has prev_events")
    if rv.room_id_is_create_event_id:
        if "room_id" in event.pdu:
            raise AuthError("create event: must not have a room_id in this room version")
    elif server_of(event.room_id or "") != server_of(event.sender):
        raise AuthError("create event: room_id's server is not the sender's")
    content = event.content
    if "room_version" in content:
        version = content["room_version"]
        if not isinstance(version, str) or version not in KNOWN_ROOM_VERSIONS:
            raise AuthError(f"create event: unknown room_version {version!r}")
    if not rv.implicit_room_creator and "creator" not in content:
        raise AuthError("create event: no creator")
    if rv.privileged_creators and "additional_creators" in content:
        extra = content["additional_creators"]
        if not isinstance(extra, list) or not all(is_valid_user_id(u) for u in extra):
            raise AuthError("create event: additional_creators must be a list of user IDs")


def _check_room_matches_create(event: Event, create: Event | None) -> None:
    """v12 rule 2 (and a sanity check in every version): the event is in the create's room."""
    if create is None:
        raise AuthError("no m.room.create event in the auth state")
    if create.rejected_reason is not None:
        raise AuthError("the room's create event was rejected")
    if create.room_id != event.room_id:
        raise AuthError("room_id does not match the create event's room")


# --------------------------------------------------------------------------------------
# m.room.member
# --------------------------------------------------------------------------------------


def _membership(state: Mapping[StateKey, Event], user_id: str | None) -> str | None:
    if user_id is None:
        return None
    member = state.get((MEMBER, user_id))
    return member.membership if member is not None else None


def _join_rule(state: Mapping[StateKey, Event]) -> str:
    join_rules = state.get(JOIN_RULES_KEY)
    if join_rules is None:
        # The spec leaves a room without join rules undefined; Synapse and the rest of
        # the network treat it as invite-only, and agreeing with them matters more.
        return "invite"
    rule = join_rules.content.get("join_rule")
    return rule if isinstance(rule, str) else ""


def _check_membership(
    event: Event, state: Mapping[StateKey, Event], power: PowerLevels, create: Event
) -> None:
    """Rule 5 (v12 numbering): m.room.member transitions."""
    rv = event.room_version
    target = event.state_key
    if target is None or "membership" not in event.content:
        raise AuthError("m.room.member: no state_key or no membership")
    membership = event.content["membership"]
    sender = event.sender
    sender_membership = _membership(state, sender)
    target_membership = _membership(state, target)

    if membership == "join":
        _check_join(event, state, power, create, sender_membership)
        return

    if membership == "invite":
        if "third_party_invite" in event.content:
            if target_membership == "ban":
                raise AuthError("invite: target is banned")
            _check_third_party_invite(event, state)
            return
        if sender_membership != "join":
            raise AuthError("invite: sender is not joined")
        if target_membership in ("join", "ban"):
            raise AuthError(f"invite: target is already {target_membership}")
        if power.user_level(sender) >= power.invite:
            return
        raise AuthError("invite: sender is below the invite level")

    if membership == "leave":
        if sender == target:
            allowed = {"invite", "join", "knock"} if rv.knock_join_rule else {"invite", "join"}
            if sender_membership in allowed:
                return
            raise AuthError(f"leave: cannot leave from membership {sender_membership!r}")
        if sender_membership != "join":
            raise AuthError("kick: sender is not joined")
        sender_level = power.user_level(sender)
        if target_membership == "ban" and sender_level < power.ban:
            raise AuthError("unban: sender is below the ban level")
        if sender_level >= power.kick and power.user_level(target) < sender_level:
            return
        raise AuthError("kick: sender is below the kick level or not above the target")

    if membership == "ban":
        if sender_membership != "join":
            raise AuthError("ban: sender is not joined")
        sender_level = power.user_level(sender)
        if sender_level >= power.ban and power.user_level(target) < sender_level:
            return
        raise AuthError("ban: sender is below the ban level or not above the target")

    if membership == "knock" and rv.knock_join_rule:
        join_rule = _join_rule(state)
        knock_rules = ("knock", "knock_restricted") if rv.knock_restricted_join_rule else ("knock",)
        if join_rule not in knock_rules:
            raise AuthError(f"knock: join rule {join_rule!r} does not allow knocking")
        if sender != target:
            raise AuthError("knock: sender is not the target")
        if sender_membership in ("ban", "invite", "join"):
            raise AuthError(f"knock: sender is already {sender_membership}")
        return

    raise AuthError(f"m.room.member: unknown membership {membership!r}")


def _check_join(
    event: Event,
    state: Mapping[StateKey, Event],
    power: PowerLevels,
    create: Event,
    sender_membership: str | None,
) -> None:
    rv = event.room_version
    target = event.state_key
    # The creator's own first join, right after the create event.
    if event.prev_event_ids == [create.event_id] and target == _first_creator(create):
        return
    if event.sender != target:
        raise AuthError("join: sender is not the target")
    if sender_membership == "ban":
        raise AuthError("join: sender is banned")
    join_rule = _join_rule(state)
    if join_rule == "invite" or (rv.knock_join_rule and join_rule == "knock"):
        if sender_membership in ("invite", "join"):
            return
        raise AuthError(f"join: join rule is {join_rule} and the sender is not invited")
    if _is_restricted(join_rule, rv):
        if sender_membership in ("invite", "join"):
            return
        authoriser = event.content.get(AUTHORISER_KEY)
        if not isinstance(authoriser, str):
            raise AuthError(f"join: {join_rule} room and no {AUTHORISER_KEY}")
        if _membership(state, authoriser) != "join":
            raise AuthError(f"join: authorising user {authoriser} is not joined")
        if power.user_level(authoriser) < power.invite:
            raise AuthError(f"join: authorising user {authoriser} may not invite")
        return
    if join_rule == "public":
        return
    raise AuthError(f"join: join rule {join_rule!r} does not allow joining")


def _first_creator(create: Event) -> str | None:
    """Who may join straight after the create event: the original creator only."""
    if create.room_version.implicit_room_creator:
        return create.sender
    creator = create.content.get("creator")
    return creator if isinstance(creator, str) else None


def _is_restricted(join_rule: str, rv: RoomVersion) -> bool:
    if join_rule == "restricted":
        return rv.restricted_join_rule
    if join_rule == "knock_restricted":
        return rv.knock_restricted_join_rule
    return False


def _check_third_party_invite(event: Event, state: Mapping[StateKey, Event]) -> None:
    tpi = event.content.get("third_party_invite")
    signed = tpi.get("signed") if isinstance(tpi, dict) else None
    if not isinstance(signed, dict):
        raise AuthError("third-party invite: no signed block")
    mxid, token = signed.get("mxid"), signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        raise AuthError("third-party invite: signed block lacks mxid or token")
    if mxid != event.state_key:
        raise AuthError("third-party invite: mxid is not the invited user")
    invite = state.get((THIRD_PARTY_INVITE, token))
    if invite is None:
        raise AuthError("third-party invite: no m.room.third_party_invite for the token")
    if invite.sender != event.sender:
        raise AuthError("third-party invite: sender did not send the m.room.third_party_invite")
    if not signed_block_is_valid(signed, third_party_invite_public_keys(invite)):
        raise AuthError("third-party invite: no valid signature by the invite's public keys")


# --------------------------------------------------------------------------------------
# m.room.power_levels
# --------------------------------------------------------------------------------------


def _check_power_levels(
    event: Event, current: Event | None, create: Event, sender_level: PowerLevel
) -> None:
    """Rule 10 (v12 numbering): the shape of a new PL event and what the sender may change."""
    rv = event.room_version
    new = event.content
    _check_power_levels_shape(new, rv)
    if rv.privileged_creators:
        users = new.get("users", {})
        for creator in room_creators(create):
            if creator in users:
                raise AuthError(f"power levels: room creator {creator} may not be in users")
    if current is None:
        return
    old = current.content

    def level(content: Mapping[str, Any], key: str) -> int | None:
        return parse_power_level(content[key], rv) if key in content else None

    for key in LEVEL_KEYS:
        old_value, new_value = level(old, key), level(new, key)
        if old_value == new_value:
            continue
        if old_value is not None and old_value > sender_level:
            raise AuthError(f"power levels: {key} is currently above the sender's level")
        if new_value is not None and new_value > sender_level:
            raise AuthError(f"power levels: new {key} is above the sender's level")

    maps = ("events", "notifications") if rv.limit_notifications_power_levels else ("events",)
    for name in maps:
        old_map, new_map = _as_map(old.get(name)), _as_map(new.get(name))
        for key in old_map.keys() | new_map.keys():
            old_value, new_value = level(old_map, key), level(new_map, key)
            if old_value == new_value:
                continue
            if old_value is not None and old_value > sender_level:
                raise AuthError(f"power levels: {name}.{key} is currently above the sender's level")
            if new_value is not None and new_value > sender_level:
                raise AuthError(f"power levels: new {name}.{key} is above the sender's level")

    old_users, new_users = _as_map(old.get("users")), _as_map(new.get("users"))
    for user in old_users.keys() | new_users.keys():
        old_value, new_value = level(old_users, user), level(new_users, user)
        if old_value == new_value:
            continue
        if user != event.sender and old_value is not None and old_value >= sender_level:
            raise AuthError(f"power levels: cannot change {user}, who is not below the sender")
        if new_value is not None and new_value > sender_level:
            raise AuthError(f"power levels: cannot raise {user} above the sender's level")


def _check_power_levels_shape(content: Mapping[str, Any], rv: RoomVersion) -> None:
    """Every value a power level in this room version's format; `users` keys user IDs."""
    for key in LEVEL_KEYS:
        if key in content and parse_power_level(content[key], rv) is None:
            raise AuthError(f"power levels: {key} is not a valid power level")
    maps = ("events", "notifications") if rv.limit_notifications_power_levels else ("events",)
    for name in maps:
        if name not in content:
            continue
        value = content[name]
        if not isinstance(value, dict) or not all(
            parse_power_level(v, rv) is not None for v in value.values()
        ):
            raise AuthError(f"power levels: {name} must map to valid power levels")
    if "users" in content:
        users = content["users"]
        if not isinstance(users, dict):
            raise AuthError("power levels: users must be an object")
        for user_id, value in users.items():
            if not is_valid_user_id(user_id):
                raise AuthError(f"power levels: {user_id!r} in users is not a user ID")
            if parse_power_level(value, rv) is None:
                raise AuthError(f"power levels: users.{user_id} is not a valid power level")


def _as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------------------
# Signatures the rules presuppose
# --------------------------------------------------------------------------------------


def required_signature_servers(event: Event) -> set[str]:
    """Servers whose signatures an event needs before the auth rules apply to it.

    The sender's server always; in v1-2 also the event ID's server; in v8+ member
    events naming a `join_authorised_via_users_server` also that user's server
    (rule 5.2). Verification itself belongs to the federation layer.
    """
    servers: set[str] = set()
    sender_server = server_of(event.sender)
    if sender_server:
        servers.add(sender_server)
    rv = event.room_version
    if rv.event_id_in_event:
        event_id_server = server_of(event.event_id)
        if event_id_server:
            servers.add(event_id_server)
    if rv.restricted_join_rule and event.type == MEMBER:
        authoriser = event.content.get(AUTHORISER_KEY)
        if isinstance(authoriser, str):
            authoriser_server = server_of(authoriser)
            if authoriser_server:
                servers.add(authoriser_server)
    return servers


__all__ = [
    "AuthError",
    "auth_types_for_event",
    "check_auth_events_selection",
    "check_auth_rules",
    "get_power_level",
    "get_required_level",
    "required_signature_servers",
]
