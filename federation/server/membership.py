"""The resident-server side of membership handshakes.

make_join / make_leave / make_knock hand a remote server an unsigned template built on
our current state (auth-checked: 403 when the user may not do it). The matching send_*
takes the signed event back, checks it matches what a template allows (type, membership,
sender on the origin server, room and event ID), runs the receiving checks and the auth
rules, and persists it through the room service, which announces it to the other
servers in the room. Restricted joins get a `join_authorised_via_users_server` of ours
in the template and our signature in send_join. Invites (v2) to our users are
counter-signed and stored as out-of-band memberships so the invitee sees them in /sync.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from federation.acl import check_server_acl
from federation.appkeys import INBOUND
from federation.inbound import PduRejected
from federation.keys import SERVER_KEYS
from federation.server.auth_middleware import body_of, origin_of
from federation.server.common import (
    require_dict,
    room_gate,
    room_id_param,
    stores_of,
)
from federation.server.visibility import server_in_room
from homeserver.appstate import CONFIG
from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.events import KNOWN_ROOM_VERSIONS, Event, RoomVersion, get_room_version
from homeserver.events.signing import sign_event
from homeserver.graph.auth_rules import (
    AuthError,
    auth_types_for_event,
    check_auth_events_selection,
    check_auth_rules,
)
from homeserver.graph.power_levels import PowerLevels
from homeserver.http import json_response, path_param
from homeserver.ids import parse_user_id
from homeserver.rooms.client_events import strip_state_items
from homeserver.services import LOCAL_EVENTS, MEMBERSHIP, PERSISTER, ROOM_LOCKS, ROOM_STATE
from homeserver.storage import Stores

log = logging.getLogger(__name__)

CREATE_KEY = ("m.room.create", "")
JOIN_RULES_KEY = ("m.room.join_rules", "")
AUTHORISER = "join_authorised_via_users_server"
MAX_HEROES = 5


def _user_param(request: web.Request) -> str:
    user_id = path_param(request, "user_id")
    try:
        parse_user_id(user_id)
    except ValueError as e:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user ID: {e}") from None
    if user_id.partition(":")[2] != origin_of(request):
        raise forbidden("The user does not belong to the requesting server")
    return user_id


def _check_versions(request: web.Request, version: RoomVersion) -> None:
    supported = request.query.getall("ver", ["1"])
    if version.identifier not in supported:
        raise MatrixError(
            400,
            "M_INCOMPATIBLE_ROOM_VERSION",
            "Your homeserver does not support the features required to join this room",
            room_version=version.identifier,
        )


async def _resident_or_404(request: web.Request, room_id: str) -> RoomVersion:
    version = await room_gate(request, room_id, must_see=False)
    if not await server_in_room(
        stores_of(request), room_id, request.config_dict[CONFIG].server_name
    ):
        raise not_found("We are not in this room")
    return version


async def _state_event(stores: Stores, room_id: str, key: tuple[str, str]) -> Event | None:
    event_id = await stores.current_state.get_current_state_event_id(room_id, *key)
    return None if event_id is None else await stores.events.get_event(event_id)


async def _restricted_authoriser(
    stores: Stores, room_id: str, user_id: str, version: RoomVersion, server_name: str
) -> str | None:
    """For a restricted room the user is not invited to: a local user who may invite,
    after checking the user meets an `allow` condition. None if not restricted."""
    rules = await _state_event(stores, room_id, JOIN_RULES_KEY)
    join_rule = rules.content.get("join_rule") if rules else None
    restricted = (join_rule == "restricted" and version.restricted_join_rule) or (
        join_rule == "knock_restricted" and version.knock_restricted_join_rule
    )
    if not restricted or rules is None:
        return None
    if await stores.current_state.get_membership(room_id, user_id) in ("invite", "join"):
        return None
    allow = rules.content.get("allow")
    allowed_rooms = [
        a.get("room_id")
        for a in (allow if isinstance(allow, list) else [])
        if isinstance(a, dict) and a.get("type") == "m.room_membership"
    ]
    known_any = False
    satisfied = False
    for other in allowed_rooms:
        if not isinstance(other, str) or await stores.rooms.get_room_version(other) is None:
            continue
        if server_name not in await stores.current_state.get_joined_hosts(other):
            continue
        known_any = True
        if await stores.current_state.get_membership(other, user_id) == "join":
            satisfied = True
            break
    if not known_any:
        raise MatrixError(400, "M_UNABLE_TO_GRANT_JOIN", "No allowed room is known here")
    if not satisfied:
        raise MatrixError(
            403, "M_UNABLE_TO_AUTHORISE_JOIN", "The user is not in any room that allows joining"
        )
    power = PowerLevels(
        await _state_event(stores, room_id, ("m.room.power_levels", "")),
        await _state_event(stores, room_id, CREATE_KEY),
    )
    members = await stores.current_state.get_members(room_id)
    candidates = sorted(
        (u for u, m in members.items() if m == "join" and u.partition(":")[2] == server_name),
        key=lambda u: (-power.user_level(u), u),
    )
    for user in candidates:
        if power.user_level(user) >= power.invite:
            return user
    raise MatrixError(400, "M_UNABLE_TO_GRANT_JOIN", "No local user here may authorise the join")


async def _make(request: web.Request, membership: str) -> web.Response:
    room_id = room_id_param(request)
    user_id = _user_param(request)
    version = await _resident_or_404(request, room_id)
    if membership in ("join", "knock"):
        _check_versions(request, version)
    if membership == "knock" and not version.knock_join_rule:
        raise MatrixError(
            400,
            "M_INCOMPATIBLE_ROOM_VERSION",
            "This room version does not support knocking",
            room_version=version.identifier,
        )
    stores = stores_of(request)
    content: dict[str, Any] = {"membership": membership}
    if membership == "join":
        server_name = request.config_dict[CONFIG].server_name
        authoriser = await _restricted_authoriser(stores, room_id, user_id, version, server_name)
        if authoriser is not None:
            content[AUTHORISER] = authoriser
    template = await request.config_dict[LOCAL_EVENTS].build_template(
        room_id, user_id, "m.room.member", content, user_id
    )
    return json_response({"room_version": version.identifier, "event": template})


async def make_join(request: web.Request) -> web.Response:
    return await _make(request, "join")


async def make_leave(request: web.Request) -> web.Response:
    return await _make(request, "leave")


async def make_knock(request: web.Request) -> web.Response:
    return await _make(request, "knock")


def _member_event_for_path(
    request: web.Request,
    pdu: dict[str, Any],
    version: RoomVersion,
    room_id: str,
    membership: str,
    wrong_kind: str,
) -> Event:
    """The Event for `pdu`, checked to be the path's event in the path's room and an
    m.room.member event of `membership`; `wrong_kind` is the error for any other event."""
    try:
        event = Event(pdu, version)
    except Exception:
        raise MatrixError(400, "M_BAD_JSON", "Malformed event") from None
    if event.event_id != path_param(request, "event_id"):
        raise MatrixError(400, "M_BAD_JSON", "Event ID does not match the path")
    if event.room_id != room_id:
        raise MatrixError(400, "M_BAD_JSON", "Event is for another room")
    if pdu.get("type") != "m.room.member" or event.membership != membership:
        raise MatrixError(400, "M_BAD_JSON", wrong_kind)
    return event


def _parse_member_event(
    request: web.Request, pdu: Any, version: RoomVersion, room_id: str, membership: str
) -> Event:
    """Build the Event and check it is a `membership` event of the origin's user."""
    if not isinstance(pdu, dict):
        raise MatrixError(400, "M_BAD_JSON", "Body must be an event")
    event = _member_event_for_path(
        request, pdu, version, room_id, membership, f"Event is not a {membership} membership event"
    )
    sender = pdu.get("sender")
    if not isinstance(sender, str) or pdu.get("state_key") != sender:
        raise MatrixError(400, "M_BAD_JSON", "state_key must be the sender")
    if sender.partition(":")[2] != origin_of(request):
        raise forbidden("The event's sender does not belong to the requesting server")
    return event


async def _checked(request: web.Request, pdu: dict[str, Any], version: RoomVersion) -> Event:
    """Receiving checks 1-3; a content hash mismatch is refused outright here, since a
    redacted membership event is not what the peer asked us to vouch for."""
    try:
        event = await request.config_dict[INBOUND].check_pdu(pdu, version)
    except PduRejected as e:
        raise forbidden(str(e)) from None
    if event.pdu is not pdu:
        raise forbidden("Content hash mismatch")
    return event


async def _auth_and_persist(request: web.Request, event: Event) -> dict[Any, str]:
    """Auth-check `event` against its auth events and the state before it, persist it
    (announced to the room's other servers); return the state before it."""
    stores = stores_of(request)
    rv = event.room_version
    try:
        state_before, _ = await request.config_dict[ROOM_STATE].state_after_events(
            rv, event.prev_event_ids
        )
    except LookupError:
        raise MatrixError(400, "M_BAD_JSON", "Unknown prev_events") from None
    have = event.event_id in await stores.events.have_events([event.event_id])
    if have and not await stores.events.is_outlier(event.event_id):
        return state_before
    auth_events = await stores.events.get_events(event.auth_event_ids)
    if len(auth_events) != len(set(event.auth_event_ids)):
        raise MatrixError(400, "M_BAD_JSON", "Unknown auth_events")
    keys = auth_types_for_event(rv, event.type, event.sender, event.state_key, event.content)
    room_state = request.config_dict[ROOM_STATE]
    try:
        check_auth_events_selection(event, list(auth_events.values()))
        own = {e.state_tuple: e for e in auth_events.values() if e.is_state()}
        if CREATE_KEY not in own and CREATE_KEY in state_before:
            create = await stores.events.get_event(state_before[CREATE_KEY])
            if create is not None:
                own[CREATE_KEY] = create
        check_auth_rules(event, own)
        check_auth_rules(event, await room_state.auth_state_for(state_before, keys | {CREATE_KEY}))
    except AuthError as e:
        raise forbidden(f"Event not allowed: {e}") from None
    await request.config_dict[LOCAL_EVENTS].persist_built(event)
    return state_before


async def _pdus(stores: Stores, event_ids: list[str]) -> list[dict[str, Any]]:
    events = await stores.events.get_events(event_ids)
    return [events[e].pdu for e in event_ids if e in events]


async def send_join(request: web.Request) -> web.Response:
    omit = request.query.get("omit_members", "false").lower() == "true"
    return json_response(await _send_join(request, omit=omit))


async def send_join_v1(request: web.Request) -> web.Response:
    """The deprecated v1 form: no partial state, answered as `[200, {...}]`."""
    return json_response([200, await _send_join(request, omit=False)])


async def _send_join(request: web.Request, *, omit: bool) -> dict[str, Any]:
    room_id = room_id_param(request)
    version = await _resident_or_404(request, room_id)
    stores = stores_of(request)
    pdu = dict(require_dict(body_of(request)))
    event = _parse_member_event(request, pdu, version, room_id, "join")
    keys = request.config_dict[SERVER_KEYS]
    authoriser = event.content.get(AUTHORISER)
    if isinstance(authoriser, str) and authoriser.partition(":")[2] == keys.server_name:
        if not version.restricted_join_rule:
            raise MatrixError(400, "M_BAD_JSON", f"{AUTHORISER} in a room version without it")
        # Vouch only for a joiner that still meets an `allow` condition (make_join
        # checked it once; the membership may have changed since).
        await _restricted_authoriser(
            stores, room_id, event.state_key or "", version, keys.server_name
        )
        pdu["signatures"] = {k: dict(v) for k, v in (pdu.get("signatures") or {}).items()}
        sign_event(pdu, version, keys.server_name, keys.primary)
    event = await _checked(request, pdu, version)
    servers_before = sorted(await stores.current_state.get_joined_hosts(room_id))
    state_before = await _auth_and_persist(request, event)

    state_ids = dict(state_before)
    members_omitted = False
    if omit:
        keep = await _hero_member_keys(stores, room_id, state_before, event.state_key or "")
        state_ids = {k: v for k, v in state_before.items() if k[0] != "m.room.member" or k in keep}
        members_omitted = True
    chain = await stores.events.get_auth_chain_ids([*state_ids.values(), event.event_id])
    if omit:
        chain -= set(state_ids.values())
    body: dict[str, Any] = {
        "origin": keys.server_name,
        "event": event.pdu,
        "state": await _pdus(stores, sorted(state_ids.values())),
        "auth_chain": await _pdus(stores, sorted(chain)),
        "members_omitted": members_omitted,
        "servers_in_room": servers_before,
    }
    return body


async def _hero_member_keys(
    stores: Stores, room_id: str, state: dict[Any, str], joiner: str
) -> set[tuple[str, str]]:
    """Member state keys to keep with omit_members: the joiner's own, and the room's
    heroes (up to 5 joined/invited members) when it has neither a name nor an alias."""
    keep = {("m.room.member", joiner)}
    if ("m.room.name", "") in state or ("m.room.canonical_alias", "") in state:
        return keep
    member_ids = {k: v for k, v in state.items() if k[0] == "m.room.member" and k[1] != joiner}
    events = await stores.events.get_events(member_ids.values())
    heroes = sorted(
        k
        for k, eid in member_ids.items()
        if eid in events and events[eid].membership in ("join", "invite")
    )[:MAX_HEROES]
    return keep | set(heroes)


async def _send_leave(request: web.Request) -> None:
    room_id = room_id_param(request)
    version = await _resident_or_404(request, room_id)
    pdu = require_dict(body_of(request))
    _parse_member_event(request, pdu, version, room_id, "leave")
    event = await _checked(request, pdu, version)
    await _auth_and_persist(request, event)


async def send_leave(request: web.Request) -> web.Response:
    await _send_leave(request)
    return json_response({})


async def send_leave_v1(request: web.Request) -> web.Response:
    """The deprecated v1 form, answered as `[200, {}]`."""
    await _send_leave(request)
    return json_response([200, {}])


async def send_knock(request: web.Request) -> web.Response:
    room_id = room_id_param(request)
    version = await _resident_or_404(request, room_id)
    if not version.knock_join_rule:
        raise MatrixError(
            400, "M_INCOMPATIBLE_ROOM_VERSION", "No knocking here", room_version=version.identifier
        )
    pdu = require_dict(body_of(request))
    _parse_member_event(request, pdu, version, room_id, "knock")
    event = await _checked(request, pdu, version)
    await _auth_and_persist(request, event)
    state = await request.config_dict[MEMBERSHIP].stripped_state_pdus(room_id)
    return json_response({"knock_room_state": state})


async def invite_v2(request: web.Request) -> web.Response:
    body = require_dict(body_of(request))
    pdu = dict(require_dict(body.get("event"), "event"))
    stripped = body.get("invite_room_state", [])
    return json_response(await _invite(request, body.get("room_version"), pdu, stripped))


async def invite_v1(request: web.Request) -> web.Response:
    """The deprecated v1 form: the body is the event itself (its `unsigned` may carry
    `invite_room_state`) and names no room version, so it can only be room version 1
    or 2, whose event format is the same (as Synapse assumes). Answered `[200, {...}]`."""
    pdu = dict(require_dict(body_of(request)))
    unsigned = pdu.get("unsigned")
    stripped = unsigned.get("invite_room_state", []) if isinstance(unsigned, dict) else []
    known = await stores_of(request).rooms.get_room_version(room_id_param(request))
    version_id = known if known in ("1", "2") else "1"
    if known is not None and known != version_id:
        raise MatrixError(
            400,
            "M_INCOMPATIBLE_ROOM_VERSION",
            "The v1 invite API only serves room versions 1 and 2",
            room_version=known,
        )
    return json_response([200, await _invite(request, version_id, pdu, stripped)])


async def _invite(
    request: web.Request, version_id: Any, pdu: dict[str, Any], stripped: Any
) -> dict[str, Any]:
    """Check, counter-sign and store an invite of one of our users; the signed event."""
    room_id = room_id_param(request)
    if not isinstance(version_id, str) or version_id not in KNOWN_ROOM_VERSIONS:
        raise MatrixError(
            400,
            "M_INCOMPATIBLE_ROOM_VERSION",
            "Unsupported room version",
            room_version=version_id if isinstance(version_id, str) else None,
        )
    version = get_room_version(version_id)
    stores = stores_of(request)
    known = await stores.rooms.get_room_version(room_id)
    if known is not None:
        if known != version_id:
            raise MatrixError(400, "M_BAD_JSON", "Room version does not match the room")
        await check_server_acl(stores, room_id, origin_of(request))
    event = _parse_invite(request, pdu, version, room_id)
    invitee = event.state_key or ""
    server_name = request.config_dict[CONFIG].server_name
    if invitee.partition(":")[2] != server_name or await stores.accounts.get_user(invitee) is None:
        raise not_found("The invited user does not exist here")
    if not isinstance(stripped, list):
        raise MatrixError(400, "M_BAD_JSON", "invite_room_state must be an array")
    await _checked(request, {k: v for k, v in pdu.items() if k != "unsigned"}, version)
    keys = request.config_dict[SERVER_KEYS]
    signed = {k: v for k, v in pdu.items() if k != "unsigned"}
    signed["signatures"] = {k: dict(v) for k, v in (pdu.get("signatures") or {}).items()}
    sign_event(signed, version, keys.server_name, keys.primary)
    stored = dict(signed)
    stored["unsigned"] = {"invite_room_state": strip_state_items(stripped)}
    event = Event(stored, version)
    if known is None:
        await stores.rooms.store_room(room_id, version_id, _creator_of(stripped, event))
    await _persist_invite(request, event)
    return {"event": signed}


def _parse_invite(
    request: web.Request, pdu: dict[str, Any], version: RoomVersion, room_id: str
) -> Event:
    event = _member_event_for_path(
        request, pdu, version, room_id, "invite", "Event is not an invite"
    )
    if not isinstance(pdu.get("state_key"), str):
        raise MatrixError(400, "M_BAD_JSON", "Invite has no state_key")
    sender = pdu.get("sender")
    if not isinstance(sender, str) or sender.partition(":")[2] != origin_of(request):
        raise forbidden("The inviter does not belong to the requesting server")
    return event


def _creator_of(stripped: list[Any], event: Event) -> str:
    for item in stripped:
        if isinstance(item, dict) and item.get("type") == "m.room.create":
            sender = item.get("sender")
            if isinstance(sender, str):
                return sender
    return event.sender


async def _persist_invite(request: web.Request, event: Event) -> None:
    """Store the invite outside the graph; it updates the invitee's membership only."""
    stores = stores_of(request)
    async with request.config_dict[ROOM_LOCKS].hold(event.room_id):
        if event.event_id in await stores.events.have_events([event.event_id]):
            return
        await request.config_dict[PERSISTER].persist_out_of_band_membership(event)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/make_join/{room_id}/{user_id}", make_join)
    app.router.add_put("/v2/send_join/{room_id}/{event_id}", send_join)
    app.router.add_get("/v1/make_leave/{room_id}/{user_id}", make_leave)
    app.router.add_put("/v2/send_leave/{room_id}/{event_id}", send_leave)
    app.router.add_get("/v1/make_knock/{room_id}/{user_id}", make_knock)
    app.router.add_put("/v1/send_knock/{room_id}/{event_id}", send_knock)
    app.router.add_put("/v2/invite/{room_id}/{event_id}", invite_v2)
    # Deprecated v1 forms, still sent by older servers (and Synapse for room v1/v2).
    app.router.add_put("/v1/send_join/{room_id}/{event_id}", send_join_v1)
    app.router.add_put("/v1/send_leave/{room_id}/{event_id}", send_leave_v1)
    app.router.add_put("/v1/invite/{room_id}/{event_id}", invite_v1)
