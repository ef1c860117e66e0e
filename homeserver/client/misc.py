"""Small discovery endpoints with nothing (yet) behind them, and content reports.

- /thirdparty/*: we have no application services bridging other networks, so there are
  no protocols (`{}`), no unknown protocol (404) and no lookup results (`[]`).
- /voip/turnServer: no TURN server is configured; `{}` is Synapse's answer then, and
  clients fall back to their own STUN/TURN defaults.
- /rooms/{roomId}/report[/{eventId}], /users/{userId}/report: stored for admins.

Not served (404 M_UNRECOGNIZED, listed in the README): SSO.
"""

from __future__ import annotations

from aiohttp import web

from homeserver.appstate import REPORTS, Mounts
from homeserver.client.auth import get_requester
from homeserver.client.validate import optional_str
from homeserver.errors import missing_param, not_found
from homeserver.http import json_response, path_param, read_json_body
from homeserver.ids import validate_event_id, validate_room_id, validate_user_id

MAX_REASON_LEN = 4096
PROTOCOL_MAX_LEN = 255


async def get_protocols(request: web.Request) -> web.Response:
    await get_requester(request)
    return json_response({})


async def get_protocol(request: web.Request) -> web.Response:
    await get_requester(request)
    raise not_found("Unknown third-party protocol")


async def get_thirdparty_lookup(request: web.Request) -> web.Response:
    await get_requester(request)
    return json_response([])


async def get_turn_server(request: web.Request) -> web.Response:
    await get_requester(request)
    return json_response({})


def _reason(body: dict, *, required: bool) -> str | None:
    if required and "reason" not in body:
        raise missing_param("Missing 'reason'")
    return optional_str(body, "reason", max_len=MAX_REASON_LEN)


async def report_event(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = str(path_param(request, "room_id", validate_room_id))
    event_id = str(path_param(request, "event_id", validate_event_id))
    body = await read_json_body(request, allow_empty=True)
    reason = _reason(body, required=False)
    await request.config_dict[REPORTS].report_event(requester.user_id, room_id, event_id, reason)
    return json_response({})


async def report_room(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = str(path_param(request, "room_id", validate_room_id))
    body = await read_json_body(request)
    reason = _reason(body, required=True) or ""
    await request.config_dict[REPORTS].report_room(requester.user_id, room_id, reason)
    return json_response({})


async def report_user(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    user_id = str(path_param(request, "user_id", validate_user_id))
    body = await read_json_body(request)
    reason = _reason(body, required=True) or ""
    await request.config_dict[REPORTS].report_user(requester.user_id, user_id, reason)
    return json_response({})


def setup(mounts: Mounts) -> None:
    router = mounts.client.router
    for prefix in ("/v3", "/r0"):
        router.add_get(prefix + "/thirdparty/protocols", get_protocols)
        router.add_get(prefix + "/thirdparty/protocol/{protocol}", get_protocol)
        for kind in ("location", "user"):
            router.add_get(f"{prefix}/thirdparty/{kind}", get_thirdparty_lookup)
            router.add_get(f"{prefix}/thirdparty/{kind}/{{protocol}}", get_thirdparty_lookup)
        router.add_get(prefix + "/voip/turnServer", get_turn_server)
        router.add_post(prefix + "/rooms/{room_id}/report/{event_id}", report_event)
        router.add_post(prefix + "/rooms/{room_id}/report", report_room)
        router.add_post(prefix + "/users/{user_id}/report", report_user)
