"""Small discovery endpoints with nothing (yet) behind them, and content reports.

- /thirdparty/*: forwarded to the application services that declare the protocol
  (bridges); without any, no protocols (`{}`), unknown protocol (404), no results (`[]`).
- /voip/turnServer: homeserver/client/voip.py (TURN credentials, `{}` without TURN).
- /rooms/{roomId}/report[/{eventId}], /users/{userId}/report: stored for admins.

"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web

from homeserver.appstate import APP_SERVICE_SENDER, APP_SERVICES, RATE_LIMITERS, REPORTS, Mounts
from homeserver.client.auth import get_requester
from homeserver.client.validate import optional_str
from homeserver.client.voip import get_turn_server
from homeserver.errors import missing_param, not_found
from homeserver.http import json_response, path_param, read_json_body
from homeserver.ids import validate_event_id, validate_room_id, validate_user_id

MAX_REASON_LEN = 4096
PROTOCOL_MAX_LEN = 255


def _protocol(request: web.Request) -> str:
    protocol = str(path_param(request, "protocol"))
    if len(protocol) > PROTOCOL_MAX_LEN:
        raise not_found("Unknown third-party protocol")
    return protocol


async def get_protocols(request: web.Request) -> web.Response:
    await get_requester(request)
    services = request.config_dict.get(APP_SERVICES)
    sender = request.config_dict.get(APP_SERVICE_SENDER)
    found: dict[str, Any] = {}
    if services and sender is not None:
        for protocol in sorted({p for s in services.all for p in s.config.protocols}):
            answers = await sender.third_party(f"protocol/{quote(protocol)}", {}, protocol)
            for answer in answers:
                if isinstance(answer, dict):
                    found[protocol] = answer
                    break
    return json_response(found)


async def get_protocol(request: web.Request) -> web.Response:
    await get_requester(request)
    protocol = _protocol(request)
    sender = request.config_dict.get(APP_SERVICE_SENDER)
    if sender is not None:
        for answer in await sender.third_party(f"protocol/{quote(protocol)}", {}, protocol):
            if isinstance(answer, dict):
                return json_response(answer)
    raise not_found("Unknown third-party protocol")


async def get_thirdparty_lookup(request: web.Request) -> web.Response:
    """/thirdparty/{location,user}[/{protocol}]: the bridges' answers, concatenated."""
    await get_requester(request)
    kind = request.path.split("/thirdparty/", 1)[1].split("/", 1)[0]
    protocol = _protocol(request) if "protocol" in request.match_info else None
    sender = request.config_dict.get(APP_SERVICE_SENDER)
    if sender is None:
        return json_response([])
    path = kind if protocol is None else f"{kind}/{quote(protocol)}"
    query = {k: v for k, v in request.query.items() if k != "access_token"}
    results: list[Any] = []
    for answer in await sender.third_party(path, query, protocol):
        if isinstance(answer, list):
            results.extend(a for a in answer if isinstance(a, dict))
    return json_response(results)


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
    request.config_dict[RATE_LIMITERS].check("reports", requester.user_id)
    await request.config_dict[REPORTS].report_event(requester.user_id, room_id, event_id, reason)
    return json_response({})


async def report_room(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = str(path_param(request, "room_id", validate_room_id))
    body = await read_json_body(request)
    reason = _reason(body, required=True) or ""
    request.config_dict[RATE_LIMITERS].check("reports", requester.user_id)
    await request.config_dict[REPORTS].report_room(requester.user_id, room_id, reason)
    return json_response({})


async def report_user(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    user_id = str(path_param(request, "user_id", validate_user_id))
    body = await read_json_body(request)
    reason = _reason(body, required=True) or ""
    request.config_dict[RATE_LIMITERS].check("reports", requester.user_id)
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
