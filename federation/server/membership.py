"""The resident-server side of membership handshakes, and invites of our users.

The routes parse the request, authenticate what belongs to federation (the user and the
event's sender belong to the origin, the room's server ACL, checks 1-3 of the event:
format, signatures, content hash) and call the room service's `FederatedMembership`,
which decides everything else (see homeserver/rooms/federated_membership.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from federation.appkeys import FEDERATED_MEMBERSHIP, INBOUND
from federation.inbound import PduMalformed, PduRejected
from federation.server.auth_middleware import body_of, origin_of
from federation.server.common import require_dict, room_gate, room_id_param, stores_of
from homeserver.appstate import RATE_LIMITERS
from homeserver.errors import MatrixError, forbidden
from homeserver.events import KNOWN_ROOM_VERSIONS, Event, RoomVersion, get_room_version
from homeserver.http import json_response, path_param
from homeserver.ids import parse_user_id
from homeserver.ratelimit import check_invite


def _user_param(request: web.Request) -> str:
    user_id = path_param(request, "user_id")
    try:
        parse_user_id(user_id)
    except ValueError as e:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user ID: {e}") from None
    if user_id.partition(":")[2] != origin_of(request):
        raise forbidden("The user does not belong to the requesting server")
    return user_id


async def _make(request: web.Request, membership: str) -> web.Response:
    room_id = room_id_param(request)
    user_id = _user_param(request)
    await room_gate(request, room_id, must_see=False)
    version, template = await request.config_dict[FEDERATED_MEMBERSHIP].make(
        room_id, user_id, membership, request.query.getall("ver", ["1"])
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
    except PduMalformed as e:
        # As Synapse: a malformed event (floats or out-of-range integers where the room
        # version's canonical JSON is strict) is a bad request, not a refusal.
        raise MatrixError(400, "M_BAD_JSON", str(e)) from None
    except PduRejected as e:
        raise forbidden(str(e)) from None
    if event.pdu is not pdu:
        raise forbidden("Content hash mismatch")
    return event


async def _send(request: web.Request, membership: str) -> tuple[Any, Event]:
    """The checked event of a send_<membership> request (and the core service)."""
    room_id = room_id_param(request)
    await room_gate(request, room_id, must_see=False)
    core = request.config_dict[FEDERATED_MEMBERSHIP]
    version = await core.resident_version(room_id, membership)
    pdu = dict(require_dict(body_of(request)))
    _parse_member_event(request, pdu, version, room_id, membership)
    if membership == "join":
        pdu = await core.countersign_restricted_join(version, pdu)
    return core, await _checked(request, pdu, version)


async def send_join(request: web.Request) -> web.Response:
    omit = request.query.get("omit_members", "false").lower() == "true"
    core, event = await _send(request, "join")
    return json_response(await core.send_join(event, omit_members=omit))


async def send_join_v1(request: web.Request) -> web.Response:
    """The deprecated v1 form: no partial state, answered as `[200, {...}]`."""
    core, event = await _send(request, "join")
    return json_response([200, await core.send_join(event, omit_members=False)])


async def send_leave(request: web.Request) -> web.Response:
    core, event = await _send(request, "leave")
    await core.send_leave(event)
    return json_response({})


async def send_leave_v1(request: web.Request) -> web.Response:
    """The deprecated v1 form, answered as `[200, {}]`."""
    core, event = await _send(request, "leave")
    await core.send_leave(event)
    return json_response([200, {}])


async def send_knock(request: web.Request) -> web.Response:
    core, event = await _send(request, "knock")
    return json_response({"knock_room_state": await core.send_knock(event)})


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
    """Parse and check an invite of one of our users; the core counter-signs it."""
    room_id = room_id_param(request)
    known = await stores_of(request).rooms.get_room_version(room_id)
    if known is not None:
        # The server ACL first: a denied server learns nothing else from us.
        await room_gate(request, room_id, must_see=False)
    if not isinstance(version_id, str) or version_id not in KNOWN_ROOM_VERSIONS:
        raise MatrixError(
            400,
            "M_INCOMPATIBLE_ROOM_VERSION",
            "Unsupported room version",
            room_version=version_id if isinstance(version_id, str) else None,
        )
    version = get_room_version(version_id)
    if known is not None and known != version_id:
        raise MatrixError(400, "M_BAD_JSON", "Room version does not match the room")
    _parse_invite(request, pdu, version, room_id)
    if not isinstance(stripped, list):
        raise MatrixError(400, "M_BAD_JSON", "invite_room_state must be an array")
    event = await _checked(request, {k: v for k, v in pdu.items() if k != "unsigned"}, version)
    # rc_invites per room and per invited user, as for local invites (Synapse does the
    # same for invites over federation): one peer cannot bury a user in invites.
    check_invite(request.config_dict[RATE_LIMITERS], room_id, event.state_key or "")
    return await request.config_dict[FEDERATED_MEMBERSHIP].receive_invite(
        event, stripped, origin_of(request)
    )


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
