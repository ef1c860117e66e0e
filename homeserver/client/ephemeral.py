"""Typing (typing.yaml), receipts (receipts.yaml), read markers (read_markers.yaml) and
presence (presence.yaml). Thin: parse and validate, then one service call."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.appstate import JOINED_ROOMS, PRESENCE, RATE_LIMITERS, RECEIPTS, TYPING
from homeserver.client.auth import get_requester
from homeserver.client.validate import optional_int, optional_str
from homeserver.ephemeral.presence import STATES
from homeserver.ephemeral.receipts import RECEIPT_TYPES
from homeserver.errors import bad_json, forbidden, invalid_param, not_found
from homeserver.http import json_response, path_param, read_json_body
from homeserver.ids import validate_event_id, validate_room_id, validate_user_id

MAX_STATUS_MSG = 4096


async def put_typing(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = path_param(request, "roomId", validate_room_id)
    user_id = path_param(request, "userId", validate_user_id)
    if user_id != requester.user_id:
        raise forbidden("Cannot set typing state for another user")
    body = await read_json_body(request)
    typing = body.get("typing")
    if not isinstance(typing, bool):
        raise bad_json("'typing' must be a boolean")
    timeout = optional_int(body, "timeout", default=30_000)
    if timeout is None or timeout < 0:
        raise bad_json("'timeout' must be a non-negative integer")
    await request.config_dict[TYPING].set_typing(room_id, user_id, typing, timeout)
    return json_response({})


async def post_receipt(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = path_param(request, "roomId", validate_room_id)
    receipt_type = path_param(request, "receiptType")
    event_id = path_param(request, "eventId", validate_event_id)
    if receipt_type not in RECEIPT_TYPES:
        raise invalid_param(f"Unknown receipt type {receipt_type!r}")
    body = await read_json_body(request, allow_empty=True)
    thread_id = body.get("thread_id")
    if thread_id is not None:
        if not isinstance(thread_id, str) or not thread_id:
            raise invalid_param("thread_id field must be a non-empty string")
        if receipt_type == "m.fully_read":
            raise invalid_param("thread_id is not allowed for m.fully_read")
        if thread_id != "main":
            try:
                validate_event_id(thread_id)
            except ValueError:
                raise invalid_param("thread_id must be 'main' or an event ID") from None
    await request.config_dict[RECEIPTS].set_local(
        room_id, requester.user_id, receipt_type, event_id, thread_id
    )
    return json_response({})


async def post_read_markers(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    room_id = path_param(request, "roomId", validate_room_id)
    body = await read_json_body(request)
    wanted: list[tuple[str, str]] = []
    for receipt_type in ("m.fully_read", "m.read", "m.read.private"):
        event_id = optional_str(body, receipt_type, max_len=255)
        if event_id is None:
            continue
        try:
            validate_event_id(event_id)
        except ValueError:
            raise invalid_param(f"{receipt_type} is not an event ID") from None
        wanted.append((receipt_type, event_id))
    receipts = request.config_dict[RECEIPTS]
    for receipt_type, event_id in wanted:
        await receipts.set_local(room_id, requester.user_id, receipt_type, event_id)
    return json_response({})


async def put_presence(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    user_id = path_param(request, "userId", validate_user_id)
    if user_id != requester.user_id:
        raise forbidden("Cannot set presence of another user")
    body = await read_json_body(request)
    state = body.get("presence")
    if state not in STATES:
        raise bad_json("'presence' must be one of online, offline, unavailable")
    status_msg = optional_str(body, "status_msg", max_len=MAX_STATUS_MSG)
    request.config_dict[RATE_LIMITERS].check("presence", user_id)  # rc_presence.per_user
    await request.config_dict[PRESENCE].set_local(user_id, state, status_msg)
    return json_response({})


async def get_presence(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    user_id = path_param(request, "userId", validate_user_id)
    presence = request.config_dict[PRESENCE]
    if user_id != requester.user_id:
        joined = request.config_dict[JOINED_ROOMS]
        if (await joined.get(user_id)).isdisjoint(await joined.get(requester.user_id)):
            raise forbidden("You do not share a room with this user")
    row = presence.get(user_id)
    if row is None and presence.is_off:
        return json_response({"presence": "offline"})  # as Synapse answers
    if row is None:
        raise not_found("Presence not known")
    content: dict[str, Any] = presence.format(row)
    return json_response(content)


def add_routes(app: web.Application) -> None:
    for prefix in ("/v3", "/r0"):
        app.router.add_put(prefix + "/rooms/{roomId}/typing/{userId}", put_typing)
        app.router.add_post(
            prefix + "/rooms/{roomId}/receipt/{receiptType}/{eventId}", post_receipt
        )
        app.router.add_post(prefix + "/rooms/{roomId}/read_markers", post_read_markers)
        app.router.add_put(prefix + "/presence/{userId}/status", put_presence)
        app.router.add_get(prefix + "/presence/{userId}/status", get_presence)
