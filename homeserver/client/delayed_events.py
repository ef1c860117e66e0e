"""Delayed events (MSC4140, unstable prefix org.matrix.msc4140), as Synapse serves them.

- PUT /rooms/{roomId}/send/... and /state/... with `?org.matrix.msc4140.delay=<ms>`
  schedule the event instead of sending it: `{"delay_id": ...}` (messages.py and
  room_state.py call `schedule_if_delayed`).
- POST /delayed_events/{delay_id} with `{"action": "cancel"|"restart"|"send"}`, and
  POST /delayed_events/{delay_id}/{action}: manage one. No access token is needed
  (the delay_id is the capability: an SFU's token service restarts a call member's
  timer on their behalf); one that is given must be valid, and does not matter
  otherwise (as in Synapse).
- GET /delayed_events/{delay_id}: one scheduled event of the requester's (Synapse
  1.163's fields: delay_ms, delayed_since_ts).
- GET /delayed_events: the requester's `scheduled` and `finalised` ones (filters
  `status` and `delay_id`, each repeatable), and always `delayed_events` (the scheduled
  ones), which is all Synapse 1.163 answers and what matrix-js-sdk reads.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.appstate import DELAYED_EVENTS, RATE_LIMITERS, Mounts
from homeserver.client.auth import Requester, get_optional_requester, get_requester
from homeserver.delayed.service import ACTIONS, DELAY_PARAM
from homeserver.errors import MatrixError, invalid_param, not_found, unrecognized
from homeserver.http import client_ip, json_response, read_json_body

PREFIX = "/unstable/org.matrix.msc4140/delayed_events"
PARENT_PARAM = "org.matrix.msc4140.parent_delay_id"  # the MSC's first revision: not served
STATUSES = ("scheduled", "finalised")
MAX_DELAY_ID = 255


def delay_param(request: web.Request) -> int | None:
    """The requested delay in milliseconds, or None for an ordinary send."""
    if PARENT_PARAM in request.query:
        raise MatrixError(400, "M_UNRECOGNIZED", f"'{PARENT_PARAM}' is not supported")
    value = request.query.get(DELAY_PARAM)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 15:
        raise invalid_param(f"'{DELAY_PARAM}' must be a number of milliseconds")
    return int(value)


async def schedule_if_delayed(
    request: web.Request,
    requester: Requester,
    room_id: str,
    event_type: str,
    state_key: str | None,
    content: dict[str, Any],
    txn_id: str | None = None,
) -> web.Response | None:
    """Schedule the event if the request asks for a delay (the answer), else None."""
    delay_ms = delay_param(request)
    if delay_ms is None:
        return None
    request.config_dict[RATE_LIMITERS].check("message", requester.user_id)
    delay_id = await request.config_dict[DELAYED_EVENTS].schedule(
        requester.user_id,
        requester.device_id,
        room_id,
        event_type,
        state_key,
        content,
        delay_ms,
        txn_id,
    )
    return json_response({"delay_id": delay_id})


async def _manage(request: web.Request, action: str) -> web.Response:
    delay_id = request.match_info["delay_id"]
    if not delay_id or len(delay_id) > MAX_DELAY_ID:
        raise not_found("No such scheduled delayed event")
    await get_optional_requester(request)  # a token given must be valid (401 if not)
    limiter = request.config_dict[RATE_LIMITERS]

    def admit(owner: str | None) -> None:
        # Keyed by the owner: a token service acting for many users from one address is
        # not throttled for all of them at once; guesses at unknown IDs are, per address.
        key = owner if owner is not None else "ip:" + client_ip(request)
        limiter.check("delayed_event_mgmt", key)

    await request.config_dict[DELAYED_EVENTS].act(delay_id, action, admit)
    return json_response({})


async def post_action(request: web.Request) -> web.Response:
    body = await read_json_body(request)
    action = body.get("action")
    if action is None:
        raise MatrixError(400, "M_MISSING_PARAM", "'action' is missing")
    if action not in ACTIONS:
        raise invalid_param("'action' must be one of cancel, restart, send")
    return await _manage(request, action)


async def post_named_action(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    if action not in ACTIONS:
        raise unrecognized()
    await read_json_body(request, allow_empty=True)
    return await _manage(request, action)


async def get_delayed_events(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    statuses = request.query.getall("status", [])
    for status in statuses:
        if status not in STATUSES:
            raise invalid_param("'status' must be 'scheduled' or 'finalised'")
    wanted_ids = set(request.query.getall("delay_id", []))
    scheduled, finalised = await request.config_dict[DELAYED_EVENTS].of_user(requester.user_id)
    if wanted_ids:
        scheduled = [e for e in scheduled if e["delay_id"] in wanted_ids]
        finalised = [e for e in finalised if e["delayed_event"]["delay_id"] in wanted_ids]
    body: dict[str, Any] = {}
    if not statuses or "scheduled" in statuses:
        body["scheduled"] = scheduled
    if not statuses or "finalised" in statuses:
        body["finalised"] = finalised
    body["delayed_events"] = scheduled  # the first revision's key: Synapse 1.163 has only it
    return json_response(body)


async def get_delayed_event(request: web.Request) -> web.Response:
    requester = await get_requester(request)
    delay_id = request.match_info["delay_id"]
    service = request.config_dict[DELAYED_EVENTS]
    return json_response(await service.one_of_user(requester.user_id, delay_id))


def setup(mounts: Mounts) -> None:
    router = mounts.client.router
    router.add_get(PREFIX, get_delayed_events)
    router.add_get(PREFIX + "/{delay_id}", get_delayed_event)
    router.add_post(PREFIX + "/{delay_id}", post_action)
    router.add_post(PREFIX + "/{delay_id}/{action}", post_named_action)
