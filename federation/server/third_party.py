"""Third-party invites over federation (server-server "Third-party invites"):

- PUT /v1/3pid/onbind: an identity server tells us (the invitee's homeserver) that a
  3PID with pending invites was bound to one of our users. The identity service API
  gives this call no authentication, so it only hands the `signed` blocks to the room
  service, which checks each against its room's keys before anything is created.
- PUT /v1/exchange_third_party_invite/{roomId}: the invitee's server asks us (the
  inviter's) to create the invite event of a redeemed 3PID invite.
"""

from __future__ import annotations

from aiohttp import web

from federation.server.auth_middleware import body_of, origin_of
from federation.server.common import require_dict, room_gate, room_id_param
from homeserver.appstate import RATE_LIMITERS, THIRD_PARTY_INVITES
from homeserver.errors import MatrixError, forbidden
from homeserver.http import json_response, parse_json_bytes, read_body


async def on_bind(request: web.Request) -> web.Response:
    # Unauthenticated and fanning out (key checks, exchanges): charged per address.
    request.config_dict[RATE_LIMITERS].check("third_party_invite", request.remote or "?")
    body = parse_json_bytes(await read_body(request))
    if not isinstance(body, dict):
        raise MatrixError(400, "M_NOT_JSON", "Body must be a JSON object")
    await request.config_dict[THIRD_PARTY_INVITES].on_bind(body)
    return json_response({})


async def exchange_third_party_invite(request: web.Request) -> web.Response:
    room_id = room_id_param(request)
    await room_gate(request, room_id, must_see=False)
    event = require_dict(body_of(request), "body")
    content = event.get("content")
    target, sender = event.get("state_key"), event.get("sender")
    if (
        event.get("type") != "m.room.member"
        or event.get("room_id") not in (None, room_id)
        or not isinstance(content, dict)
        or content.get("membership") != "invite"
        or not isinstance(content.get("third_party_invite"), dict)
        or not isinstance(target, str)
        or not isinstance(sender, str)
    ):
        raise MatrixError(400, "M_BAD_JSON", "Not a third-party invite member event")
    if target.partition(":")[2] != origin_of(request):
        # Only the invitee's own server redeems its invites.
        raise forbidden("The invitee does not belong to the requesting server")
    signed = content["third_party_invite"].get("signed")
    await request.config_dict[THIRD_PARTY_INVITES].redeem(room_id, sender, target, signed)
    return json_response({})


def setup_routes(app: web.Application) -> None:
    app.router.add_put("/v1/3pid/onbind", on_bind)
    app.router.add_put("/v1/exchange_third_party_invite/{room_id}", exchange_third_party_invite)
